"""LoRA adapters on the local cluster: `spec.adapters` → the chart's operator loads them on the real
runtime pod → the router sends `model: "demo:NAME"` there → the answer equals PEFT's on the same base
and adapter. Then a changed source replaces the weights, a removed adapter stops being served, a
crashed runtime container has its adapter again from its first request after the restart, and after a
scale to zero an adapter request held by the router is answered by the pod it brings back.

The adapters are `hf://` repositories. No hub is reachable here, so each one is written into a hub
cache in the layout huggingface_hub keeps (`models--ORG--NAME/refs/main` and `snapshots/REVISION/`),
and the pods get that cache as `HF_HOME` with `HF_HUB_OFFLINE=1`: the runtime's real hub path
(`snapshot_download`) resolves the repository from it, as it would from a pre-filled cache volume.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import time
from pathlib import Path

import openai
import pytest
from cluster import KINDS, eventually
from conftest import CHART_VALUES

from tests.runtime.lora.adapters import SPECS, make_adapter, peft_greedy, peft_model

NAMESPACE = "lora"
ISVC = "fleetserve.io/v1alpha1/inferenceservices"
STARTUP_SECONDS = 300.0  # one runtime pod, the router and the operator: ~40 s on an idle 2-core machine
CHANGE_SECONDS = 120.0  # the operator syncs adapters every 10 s; a restarted runtime takes tens of seconds
MAX_TOKENS = 8
ORG = "fleetserve-tests"
ADAPTERS = {spec.name: spec for spec in SPECS if spec.name in ("all16", "qv4")}


def hub_cache(home: Path, repo: str, files: Path) -> None:
    """Put ``files`` into the hub cache at ``home`` as the ``main`` revision of ``repo``."""
    revision = hashlib.sha1(repo.encode()).hexdigest()
    entry = home / "hub" / f"models--{repo.replace('/', '--')}"
    shutil.copytree(files, entry / "snapshots" / revision)
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(revision)


def service(home: Path, adapters: dict[str, str]) -> dict:
    return {
        "apiVersion": "fleetserve.io/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "demo"},
        "spec": {
            "model": {"source": "demo://llama-tiny", "servedName": "demo"},
            "runtime": {
                "args": ["--skip-server-warmup", "--kv-cache-memory-gb", "0.25", "--max-lora-rank", "16"],
                "env": [{"name": "HF_HOME", "value": str(home)}, {"name": "HF_HUB_OFFLINE", "value": "1"}],
            },
            "replicas": {"count": 1},
            "adapters": adapter_list(adapters),
        },
    }


def adapter_list(adapters: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "source": f"hf://{ORG}/{repo}"} for name, repo in adapters.items()]


def status(cluster) -> dict:
    return (cluster.api.live(ISVC, NAMESPACE, "demo") or {}).get("status") or {}


def adapters_ready(cluster, names: set[str]) -> bool:
    found = status(cluster)
    condition = next((c for c in found.get("conditions") or [] if c["type"] == "AdaptersReady"), {})
    counts = {a["name"]: a.get("readyReplicas") for a in found.get("adapters") or []}
    return condition.get("status") == "True" and counts == dict.fromkeys(names, 1)


async def answers(client: openai.AsyncOpenAI, model: str, prompt: list[int]) -> str:
    reply = await client.completions.create(model=model, prompt=prompt, max_tokens=MAX_TOKENS, temperature=0)
    assert reply.model == model
    return reply.choices[0].text


async def until_answer(client: openai.AsyncOpenAI, model: str, prompt: list[int], expected: str,
                       timeout: float) -> None:
    """Ask until the answer is ``expected`` (a pod without the adapter yet answers 404 or the old weights)."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            last = await answers(client, model, prompt)
            if last == expected:
                return
        except (openai.NotFoundError, openai.APIConnectionError, openai.InternalServerError,
                openai.APIStatusError) as error:
            last = error
        await asyncio.sleep(1.0)
    raise AssertionError(f"{model} never answered {expected!r} within {timeout:.0f}s; last: {last!r}")


@pytest.mark.timeout(900)
async def test_spec_adapters_are_served_through_the_router_as_peft_computes_them(cluster, demo_model, tmp_path):
    base = demo_model("llama", "tiny")  # demo://llama-tiny's checkpoint (test_stand_ins checks they agree)
    home = tmp_path / "hf-home"
    made = {name: make_adapter(base, tmp_path / "adapters" / name, spec) for name, spec in ADAPTERS.items()}
    for name, files in made.items():
        hub_cache(home, f"{ORG}/{name}-lora", files)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    prompt = tokenizer("Once upon a time, in a small town,").input_ids
    peft = peft_model(base, made)
    expected = {name: tokenizer.decode(peft_greedy(peft, name, prompt, MAX_TOKENS), skip_special_tokens=True)
                for name in [None, *made]}
    assert len(set(expected.values())) == 3, expected  # each adapter changes the answer: none can pass unseen

    await cluster.install_chart(CHART_VALUES)
    await cluster.ensure_namespace(NAMESPACE)
    await cluster.apply(service(home, {"sql": "all16-lora", "chat": "qv4-lora"}), NAMESPACE)
    try:
        await eventually(lambda: adapters_ready(cluster, {"sql", "chat"}) and status(cluster).get("readyReplicas") == 1
                         and cluster.service_url(NAMESPACE, "demo"), STARTUP_SECONDS,
                         "AdaptersReady=True with sql and chat on the one runtime pod")
    except AssertionError:
        print(cluster.pod_log(""))
        raise
    url = cluster.service_url(NAMESPACE, "demo")
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=60)

    # both adapters, and the base model, through the router; the router learns the pod's adapters itself
    await until_answer(client, "demo:sql", prompt, expected["all16"], CHANGE_SECONDS)
    assert await answers(client, "demo:chat", prompt) == expected["qv4"]
    assert await answers(client, "demo", prompt) == expected[None]
    cards = {m.id: m for m in (await client.models.list()).data}
    assert set(cards) == {"demo", "sql", "chat"} and cards["sql"].parent == "demo"

    # one change: sql now comes from qv4's repository, chat is gone
    prefix, plural, _ = KINDS["InferenceService"]
    patch = {"spec": {"adapters": adapter_list({"sql": "qv4-lora"})}}
    answer = await cluster.request("PATCH", f"{prefix}/namespaces/{NAMESPACE}/{plural}/demo", patch,
                                   "application/merge-patch+json")
    assert answer[0] == 200, answer
    await until_answer(client, "demo:sql", prompt, expected["qv4"], CHANGE_SECONDS)
    await eventually(lambda: adapters_ready(cluster, {"sql"}), CHANGE_SECONDS, "status.adapters lists sql only")
    with pytest.raises(openai.NotFoundError) as refused:
        await answers(client, "demo:chat", prompt)
    assert "chat" in str(refused.value)

    # the runtime container crashes and the kubelet restarts it: the new process loads sql from the
    # adapter list (the operator's ConfigMap) before it listens, so it has sql from its first request on
    (pod,) = runtime_pods(cluster)
    pod.process.kill()
    await eventually(lambda: pod.restarts == 1 and pod.ready, STARTUP_SECONDS, "the restarted container ready")
    assert await answers(client, "demo:sql", prompt) == expected["qv4"]  # held by the router until it polls
    await eventually(lambda: adapters_ready(cluster, {"sql"}), CHANGE_SECONDS, "sql ready again after the restart")
    restarted = (pod.directory / "container.log").read_text().rsplit("KV cache:", 1)[1]  # the last process
    loaded = restarted.index("LoRA adapter sql loaded from fleetserve-tests/qv4-lora")
    assert loaded < restarted.index("listening on")  # before it listened

    # scale to zero, then an adapter request held by the router brings a pod back that has the adapter
    scaling = {"spec": {"replicas": {"min": 0, "max": 1}, "autoscaling": {
        "enabled": True, "intervalSeconds": 1, "scaleDownStabilizationSeconds": 2}}}
    answer = await cluster.request("PATCH", f"{prefix}/namespaces/{NAMESPACE}/{plural}/demo", scaling,
                                   "application/merge-patch+json")
    assert answer[0] == 200, answer
    await eventually(lambda: not runtime_pods(cluster) and status(cluster).get("desiredReplicas") == 0,
                     CHANGE_SECONDS, "scaled to zero, no runtime pod left")
    await eventually(lambda: condition_of(cluster, "AdaptersReady") == ("True", "ScaledToZero"), CHANGE_SECONDS,
                     "AdaptersReady=True ScaledToZero")
    cold = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=STARTUP_SECONDS)
    assert await answers(cold, "demo:sql", prompt) == expected["qv4"]  # held, then the new pod's first answer
    assert len(runtime_pods(cluster)) == 1


def runtime_pods(cluster) -> list:
    return [p for p in cluster.kubelet.pods.values() if p.namespace == NAMESPACE and "-runtime-" in p.name]


def condition_of(cluster, type_: str) -> tuple[str, str] | None:
    found = next((c for c in status(cluster).get("conditions") or [] if c["type"] == type_), None)
    return (found["status"], found["reason"]) if found else None
