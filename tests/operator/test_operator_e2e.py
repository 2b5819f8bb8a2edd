"""The operator end to end against kmock's emulated Kubernetes API.

kmock merges patches as plain dicts and has no controllers and no garbage collector, so these
tests assert what the operator sends: the objects it creates and patches, their owner references,
the deletions it asks for, and the status it writes.
"""

from __future__ import annotations

import asyncio
import json

from operator_helpers import (
    ISVC_PATH,
    ISVC_RESOURCE,
    RESYNC_SECONDS,
    UID,
    condition_is,
    deployment_path,
    eventually,
    inference_service,
    isvc_path,
    live,
    ready_status,
    send,
    was_recreated,
)

from fleetserve.operator import names

DEPLOYMENTS = "apps/v1/deployments"
CHILDREN = [
    (DEPLOYMENTS, "qwen-runtime"),
    (DEPLOYMENTS, "qwen-router"),
    ("v1/services", "qwen-runtime"),
    ("v1/services", "qwen"),
    ("v1/serviceaccounts", "qwen-router"),
    ("rbac.authorization.k8s.io/v1/roles", "qwen-router"),
    ("rbac.authorization.k8s.io/v1/rolebindings", "qwen-router"),
]
INGRESSES = "networking.k8s.io/v1/ingresses"


def all_children(api):
    found = [live(api, resource, name) for resource, name in CHILDREN]
    return found if all(found) else None


def runtime_args(api) -> list[str]:
    return live(api, DEPLOYMENTS, "qwen-runtime")["spec"]["template"]["spec"]["containers"][0]["args"]


async def test_create_makes_every_child_owned_by_the_service(operator):
    await send(operator, "POST", ISVC_PATH, inference_service())
    children = await eventually(lambda: all_children(operator))
    for child in children:
        (ref,) = child["metadata"]["ownerReferences"]
        assert ref == {"apiVersion": names.API_VERSION, "kind": names.KIND, "name": "qwen", "uid": UID,
                       "controller": True, "blockOwnerDeletion": True}
    args = runtime_args(operator)
    assert args[:3] == ["serve", "--model-path", "Qwen/Qwen2.5-0.5B-Instruct"]
    assert args[args.index("--served-model-name") + 1] == "Qwen2.5-0.5B-Instruct"
    router = live(operator, DEPLOYMENTS, "qwen-router")["spec"]["template"]["spec"]
    assert router["serviceAccountName"] == "qwen-router"
    assert router["containers"][0]["args"][-8:] == ["--k8s-service", "qwen-runtime", "--k8s-namespace", "ml",
                                                    "--policy", "cache_aware", "--max-hold-secs", "300"]
    assert live(operator, "v1/services", "qwen-runtime")["spec"]["clusterIP"] == "None"
    assert await eventually(lambda: condition_is(operator, "Ready", "False", "RuntimeNotReady"))
    status = live(operator, ISVC_RESOURCE, "qwen")["status"]
    assert status["url"] == "http://qwen.ml.svc.cluster.local"
    assert status["observedGeneration"] == 1
    assert status["desiredReplicas"] == 1
    assert live(operator, INGRESSES, "qwen") is None


async def test_spec_changes_patch_the_deployment(operator):
    await send(operator, "POST", ISVC_PATH, inference_service())
    await eventually(lambda: all_children(operator))
    change = {"metadata": {"generation": 2},
              "spec": {"runtime": {"args": ["--chunked-prefill-size", "4096"]}, "replicas": {"count": 3}}}
    await send(operator, "PATCH", isvc_path(), change)
    await eventually(lambda: runtime_args(operator)[-2:] == ["--chunked-prefill-size", "4096"])
    assert live(operator, DEPLOYMENTS, "qwen-runtime")["spec"]["replicas"] == 3
    await eventually(lambda: live(operator, ISVC_RESOURCE, "qwen")["status"].get("observedGeneration") == 2)
    assert live(operator, ISVC_RESOURCE, "qwen")["status"]["desiredReplicas"] == 3


async def test_status_follows_the_deployments(operator):
    await send(operator, "POST", ISVC_PATH, inference_service())
    await eventually(lambda: all_children(operator))
    await send(operator, "PATCH", deployment_path("qwen-router") + "/status", ready_status(1))
    await send(operator, "PATCH", deployment_path("qwen-runtime") + "/status", ready_status(1))
    await eventually(lambda: condition_is(operator, "Ready", "True", "Ready"))
    assert condition_is(operator, "Progressing", "False", "RolloutComplete")
    assert condition_is(operator, "Degraded", "False")
    status = live(operator, ISVC_RESOURCE, "qwen")["status"]
    assert (status["readyReplicas"], status["routerReadyReplicas"]) == (1, 1)
    assert status["selector"] == "fleetserve.io/inference-service=qwen,fleetserve.io/component=runtime"


async def test_children_deleted_by_hand_come_back(operator):
    await send(operator, "POST", ISVC_PATH, inference_service())
    await eventually(lambda: all_children(operator))
    await send(operator, "DELETE", deployment_path("qwen-runtime"))
    await send(operator, "DELETE", "/apis/rbac.authorization.k8s.io/v1/namespaces/ml/roles/qwen-router")
    await eventually(lambda: was_recreated(operator, DEPLOYMENTS, "qwen-runtime"))
    await eventually(lambda: was_recreated(operator, "rbac.authorization.k8s.io/v1/roles", "qwen-router"))


async def test_ingress_is_created_and_removed_with_the_spec(operator):
    spec = {"model": {"source": "pvc://models/qwen3-8b"},
            "ingress": {"host": "llm.example.com", "className": "nginx", "tlsSecretName": "llm-tls"}}
    await send(operator, "POST", ISVC_PATH, inference_service(spec=spec))
    ingress = await eventually(lambda: live(operator, INGRESSES, "qwen"))
    assert ingress["spec"]["ingressClassName"] == "nginx"
    await eventually(lambda: live(operator, ISVC_RESOURCE, "qwen").get("status", {}).get("url"))
    assert live(operator, ISVC_RESOURCE, "qwen")["status"]["url"] == "https://llm.example.com"
    await send(operator, "PATCH", isvc_path(), {"metadata": {"generation": 2}, "spec": {"ingress": None}})
    await eventually(lambda: live(operator, INGRESSES, "qwen") is None)  # only a DELETE removes it in kmock


async def test_the_adapter_list_follows_the_spec_without_a_rollout(operator):
    spec = {"model": {"source": "hf://Qwen/Qwen3-8B"}, "adapters": [{"name": "sql", "source": "hf://org/sql"}]}
    await send(operator, "POST", ISVC_PATH, inference_service(spec=spec))
    listed = await eventually(lambda: live(operator, "v1/configmaps", "qwen-adapters"))
    assert json.loads(listed["data"]["adapters.json"]) == [{"lora_name": "sql", "lora_path": "org/sql"}]
    template = (await eventually(lambda: live(operator, DEPLOYMENTS, "qwen-runtime")))["spec"]["template"]
    change = [{"name": "sql", "source": "hf://org/sql-v2"}, {"name": "chat", "source": "hf://org/chat"}]
    await send(operator, "PATCH", isvc_path(), {"metadata": {"generation": 2}, "spec": {"adapters": change}})
    await eventually(lambda: json.loads(live(operator, "v1/configmaps", "qwen-adapters")["data"]["adapters.json"])
                     == [{"lora_name": "sql", "lora_path": "org/sql-v2"}, {"lora_name": "chat", "lora_path": "org/chat"}])
    assert live(operator, DEPLOYMENTS, "qwen-runtime")["spec"]["template"] == template  # no rollout
    await send(operator, "PATCH", isvc_path(), {"metadata": {"generation": 3}, "spec": {"adapters": []}})
    await eventually(lambda: live(operator, "v1/configmaps", "qwen-adapters") is None)
    await eventually(lambda: "--lora-paths-file" not in runtime_args(operator))  # no adapters: a rollout


async def test_bad_spec_sets_a_condition_and_creates_nothing(operator):
    spec = {"model": {"source": "s3://bucket/model"}, "replicas": {"min": 3, "max": 2}}
    await send(operator, "POST", ISVC_PATH, inference_service(spec=spec))
    await eventually(lambda: condition_is(operator, "Ready", "False", "InvalidSpec"))
    ready = next(c for c in live(operator, ISVC_RESOURCE, "qwen")["status"]["conditions"] if c["type"] == "Ready")
    assert "unsupported scheme s3://" in ready["message"]
    assert "spec.replicas.min (3) is greater than spec.replicas.max (2)" in ready["message"]
    assert live(operator, DEPLOYMENTS, "qwen-runtime") is None
    fixed = {"metadata": {"generation": 2},
             "spec": {"model": {"source": "hf://Qwen/Qwen3-8B"}, "replicas": {"min": 1, "max": 2}}}
    await send(operator, "PATCH", isvc_path(), fixed)  # the operator kept running and picks up the fix
    await eventually(lambda: all_children(operator))
    await eventually(lambda: condition_is(operator, "Ready", "False", "RuntimeNotReady"))


async def test_deleting_the_service_leaves_cleanup_to_the_garbage_collector(operator):
    await send(operator, "POST", ISVC_PATH, inference_service())
    await eventually(lambda: all_children(operator))
    await send(operator, "DELETE", isvc_path())
    # kopf holds a finalizer while the resync timer runs; it stops the timer and releases it. The
    # garbage collector then removes the children through their owner references (asserted in the
    # first test); the operator must not recreate anything for an InferenceService that is gone.
    await eventually(lambda: live(operator, ISVC_RESOURCE, "qwen") is None)
    await send(operator, "DELETE", deployment_path("qwen-runtime"))  # what the garbage collector does
    await asyncio.sleep(RESYNC_SECONDS * 4)  # time for the child-event handler and timer to misbehave
    assert live(operator, DEPLOYMENTS, "qwen-runtime") is None
