"""The user's path on one machine: helm install → kubectl apply → pods → router → the OpenAI SDK.

The chart is rendered with Helm's SDK and applied to the local cluster; its Deployment runs the real
`fleetserve operator`; the operator's children run the real `fleetserve serve` and `fleetserve router`;
the official openai client talks to the router's address. See cluster.py for what stands in for what.
"""

from __future__ import annotations

import base64

import openai
import pytest
import yaml
from cluster import ROOT, eventually
from conftest import CHART_VALUES

EXAMPLE = ROOT / "examples" / "inferenceservice-demo.yaml"
NAMESPACE = "demo"
ISVC = "fleetserve.io/v1alpha1/inferenceservices"
STARTUP_SECONDS = 300.0  # ~50 s on an idle 2-core machine; generous for a loaded one
CLEANUP_SECONDS = 60.0
API_KEY = "sk-local-cluster"


def condition(obj: dict | None, type_: str) -> dict:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


@pytest.mark.timeout(600)
async def test_chart_example_serves_the_openai_client_and_delete_removes_everything(cluster):
    await cluster.install_chart(CHART_VALUES)
    isvc = yaml.safe_load(EXAMPLE.read_text())
    name = isvc["metadata"]["name"]
    # the example plus an API key, as docs/install.md shows it for the GPU example
    key = base64.b64encode(API_KEY.encode()).decode()
    await cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "demo-key"},
                         "data": {"api-key": key}}, NAMESPACE)
    isvc["spec"]["apiKeySecret"] = {"name": "demo-key"}
    await cluster.apply(isvc, NAMESPACE)

    def ready():
        live = cluster.api.live(ISVC, NAMESPACE, name)
        return condition(live, "Ready").get("status") == "True" and live["status"].get("readyReplicas") == 2

    try:
        await eventually(ready, STARTUP_SECONDS, "Ready=True with 2 runtime replicas")
    except AssertionError:
        print(cluster.pod_log(""))
        raise
    status = cluster.api.live(ISVC, NAMESPACE, name)["status"]
    assert status["url"] == f"http://{name}.{NAMESPACE}.svc.cluster.local"
    assert status["routerReadyReplicas"] == 1 and status["desiredReplicas"] == 2
    assert condition({"status": status}, "Degraded")["status"] == "False"
    runtime_endpoints = [e for e, _ in cluster.endpoints(NAMESPACE, f"{name}-runtime") if e["conditions"]["ready"]]
    assert len(runtime_endpoints) == 2

    url = cluster.service_url(NAMESPACE, name)  # the router Service, as an Ingress would reach it
    assert url is not None
    with pytest.raises(openai.AuthenticationError):
        await openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0, timeout=60)
    chat = await client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "Hello there"}], max_tokens=8, temperature=0)
    assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens > 0
    completion = await client.completions.create(model="demo", prompt="Once upon a time", max_tokens=8)
    assert completion.choices[0].text and completion.usage.completion_tokens > 0
    stream = await client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "Count"}], max_tokens=8, stream=True,
        stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert any(c.choices and c.choices[0].delta.content for c in chunks)
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    models = await client.models.list()
    assert [m.id for m in models.data] == ["demo"]

    # a spec that turns invalid keeps the serving pods, and says so
    await cluster.request("PATCH", f"/apis/{ISVC.rsplit('/', 1)[0]}/namespaces/{NAMESPACE}/inferenceservices/{name}",
                          {"spec": {"model": {"source": "demo://gpt-huge"}}}, "application/merge-patch+json")
    await eventually(lambda: condition(cluster.api.live(ISVC, NAMESPACE, name), "Degraded").get("reason")
                     == "InvalidSpec", CLEANUP_SECONDS, "Degraded=InvalidSpec")
    live = cluster.api.live(ISVC, NAMESPACE, name)
    assert condition(live, "Ready")["reason"] == "ServingLastValidSpec" and "demo://gpt-huge" in condition(
        live, "Degraded")["message"]
    again = await client.completions.create(model="demo", prompt="Still there?", max_tokens=4)
    assert again.usage.completion_tokens > 0

    uid = cluster.api.live(ISVC, NAMESPACE, name)["metadata"]["uid"]
    made = {(o["kind"], o["metadata"]["name"]) for o in cluster.owned_by(uid)}
    assert {("Deployment", f"{name}-runtime"), ("Deployment", f"{name}-router"), ("Service", name),
            ("Service", f"{name}-runtime"), ("ServiceAccount", f"{name}-router"), ("Role", f"{name}-router"),
            ("RoleBinding", f"{name}-router")} <= made
    assert sum(kind == "Pod" for kind, _ in made) == 3
    await cluster.delete("InferenceService", name, NAMESPACE)

    def all_gone():
        return (cluster.api.live(ISVC, NAMESPACE, name) is None and not cluster.owned_by(uid)
                and not [p for p in cluster.kubelet.pods.values() if p.namespace == NAMESPACE])

    await eventually(all_gone, CLEANUP_SECONDS, "the InferenceService, its children, pods and processes gone")
    left = [o["kind"] for o in cluster.api.live_objects(namespace=NAMESPACE) if o["kind"] != "Event"]
    assert left == ["Secret"]  # the user's Secret, which the InferenceService never owned
