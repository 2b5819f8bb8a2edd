"""The adapter rollout's I/O round against kmock's emulated API, with fake runtime pods on 127.0.0.1.

kmock runs no controllers: the tests create the pods (status.podIP and the container port named http
point at the fakes) and call ``AdapterRollout.step`` round by round, then assert what the pods were sent
and what the operator wrote to the status.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator

import aiohttp
import kmock
import kopf
import pytest
from operator_helpers import (
    ISVC_PATH,
    ISVC_RESOURCE,
    NAMESPACE,
    PODS,
    VERBS,
    add_pod,
    condition,
    inference_service,
    live,
    send,
)

from fleetserve.operator.adapters.loop import AdapterRollout
from fleetserve.operator.handlers import isvc_ref
from fleetserve.operator.kube import KubeClient, KubeError
from fleetserve.operator.status.writer import StatusWriter
from fleetserve.runtime import wire

INTERVAL = 0.5
SPEC = {
    "model": {"source": "hf://Qwen/Qwen2.5-0.5B-Instruct", "servedName": "qwen"},
    "adapters": [
        {"name": "sql", "source": "hf://org/sql-lora"},
        {"name": "chat", "source": "pvc://loras/team/chat"},
    ],
}
SQL, CHAT = "org/sql-lora", "/mnt/adapters/loras/team/chat"


@pytest.fixture()
async def rollout(api: kmock.KubernetesEmulator) -> AsyncIterator[AdapterRollout]:
    api.resources["v1/secrets"] = kmock.ResourceInfo(kind="Secret", namespaced=True, verbs=VERBS)
    client = KubeClient()
    await client.connect(kopf.ConnectionInfo(server=str(api.url).rstrip("/")))
    async with aiohttp.ClientSession() as session:
        yield AdapterRollout(
            client,
            StatusWriter(client),
            isvc_ref(NAMESPACE, "qwen"),
            logging.getLogger("test"),
            session,
            interval=INTERVAL,
        )
    await client.close()


def status(api) -> dict:
    return (live(api, ISVC_RESOURCE, "qwen") or {}).get("status") or {}


def adapters_ready(api) -> tuple[str, str, str] | None:
    found = condition(live(api, ISVC_RESOURCE, "qwen"), "AdaptersReady")
    return (found["status"], found["reason"], found["message"]) if found else None


async def test_loads_every_adapter_on_every_ready_pod_and_reports_them(api, rollout, runtimes):
    a, b, not_ready = await runtimes(), await runtimes(loaded={"old": "/x"}), await runtimes()
    router = await runtimes()
    await add_pod(api, "qwen-runtime-a", a.port)
    await add_pod(api, "qwen-runtime-b", b.port)
    await add_pod(api, "qwen-runtime-c", not_ready.port, ready=False)
    await add_pod(api, "qwen-router-a", router.port, component="router")
    await send(api, "POST", ISVC_PATH, inference_service(spec=SPEC))
    assert await rollout.step() == INTERVAL
    assert a.loaded == b.loaded == {"sql": SQL, "chat": CHAT}  # "old" is not in the spec: unloaded
    assert b.calls[0] == (wire.PATH_UNLOAD_LORA, "old")
    assert not_ready.calls == router.calls == []
    assert status(api)["adapters"] == [
        {"name": "sql", "readyReplicas": 2, "message": ""},
        {"name": "chat", "readyReplicas": 2, "message": ""},
    ]
    assert adapters_ready(api) == ("True", "AdaptersLoaded", "2 adapters loaded on each of 2 ready pods")
    calls = len(a.calls)
    await rollout.step()  # steady: nothing is sent again
    assert len(a.calls) == calls


async def test_a_refused_load_shows_the_runtimes_reason_and_a_fixed_source_loads(api, rollout, runtimes):
    reason = "adapter_config.json not found in /mnt/adapters/loras/team/chat"
    pod = await runtimes(bad={CHAT: reason})
    await add_pod(api, "qwen-runtime-a", pod.port)
    await send(api, "POST", ISVC_PATH, inference_service(spec=SPEC))
    await rollout.step()
    assert pod.loaded == {"sql": SQL}
    assert adapters_ready(api) == (
        "False",
        "LoadFailed",
        f"adapter chat on pod qwen-runtime-a: 400: {reason}",
    )
    assert status(api)["adapters"][1] == {
        "name": "chat",
        "readyReplicas": 0,
        "message": f"pod qwen-runtime-a: 400: {reason}",
    }
    loads = pod.calls.count((wire.PATH_LOAD_LORA, "chat"))
    await rollout.step()  # backing off: not sent again at once, the reason stays
    assert pod.calls.count((wire.PATH_LOAD_LORA, "chat")) == loads
    assert adapters_ready(api)[1] == "LoadFailed"
    fixed = {**SPEC, "adapters": [SPEC["adapters"][0], {"name": "chat", "source": "hf://org/chat-lora"}]}
    await send(api, "PATCH", f"{ISVC_PATH}/qwen", {"spec": fixed})
    await rollout.step()  # a new source is tried at once
    assert pod.loaded == {"sql": SQL, "chat": "org/chat-lora"}
    assert adapters_ready(api)[:2] == ("True", "AdaptersLoaded")


async def test_a_restarted_pod_gets_its_adapters_back(api, rollout, runtimes):
    a, b = await runtimes(), await runtimes()
    await add_pod(api, "qwen-runtime-a", a.port)
    await add_pod(api, "qwen-runtime-b", b.port)
    await send(api, "POST", ISVC_PATH, inference_service(spec=SPEC))
    await rollout.step()
    b.restart()
    await rollout.step()
    assert b.loaded == {"sql": SQL, "chat": CHAT}
    assert [entry["readyReplicas"] for entry in status(api)["adapters"]] == [2, 2]
    assert adapters_ready(api)[:2] == ("True", "AdaptersLoaded")


async def test_no_ready_pod_unreachable_pod_and_removed_adapters(api, rollout, runtimes):
    await send(api, "POST", ISVC_PATH, inference_service(spec=SPEC))
    await rollout.step()
    assert adapters_ready(api)[:2] == ("False", "NoReadyPods")
    assert [entry["readyReplicas"] for entry in status(api)["adapters"]] == [0, 0]
    pod = await runtimes()
    await add_pod(api, "qwen-runtime-a", pod.port)
    await add_pod(api, "qwen-runtime-b", 1)  # nothing listens on port 1
    await rollout.step()
    ready = adapters_ready(api)
    assert ready[:2] == ("False", "PodUnreachable") and "qwen-runtime-b" in ready[2]
    assert pod.loaded == {"sql": SQL, "chat": CHAT}
    await send(api, "DELETE", f"{PODS}/qwen-runtime-b")
    await send(api, "PATCH", f"{ISVC_PATH}/qwen", {"spec": {"adapters": []}})
    await rollout.step()
    assert pod.loaded == {}
    assert status(api)["adapters"] == []
    assert adapters_ready(api)[:2] == ("True", "NoAdapters")


async def test_the_api_key_comes_from_spec_api_key_secret(api, rollout, runtimes):
    pod = await runtimes(api_key="s3cret")
    await add_pod(api, "qwen-runtime-a", pod.port)
    spec = {**SPEC, "apiKeySecret": {"name": "keys"}}
    await send(api, "POST", ISVC_PATH, inference_service(spec=spec))
    await rollout.step()  # no Secret yet: said so, nothing sent
    assert adapters_ready(api) == (
        "False",
        "ApiKeyUnavailable",
        "spec.apiKeySecret keys/api-key: the Secret does not exist",
    )
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "keys", "namespace": NAMESPACE},
        "data": {"api-key": base64.b64encode(b"s3cret").decode()},
    }
    await send(api, "POST", f"/api/v1/namespaces/{NAMESPACE}/secrets", secret)
    await rollout.step()
    assert pod.loaded == {"sql": SQL, "chat": CHAT}
    assert adapters_ready(api)[:2] == ("True", "AdaptersLoaded")


async def test_an_invalid_spec_is_a_condition_and_a_deleted_object_ends_the_loop(api, rollout, runtimes):
    pod = await runtimes()
    await add_pod(api, "qwen-runtime-a", pod.port)
    spec = {**SPEC, "adapters": [{"name": "sql", "source": "s3://bucket/sql"}]}
    await send(api, "POST", ISVC_PATH, inference_service(spec=spec))
    await rollout.step()
    assert adapters_ready(api)[:2] == ("False", "InvalidSpec") and pod.calls == []
    await send(api, "DELETE", f"{ISVC_PATH}/qwen")
    assert await rollout.step() is None


class ForbiddenSecrets(KubeClient):
    """The chart's RBAC: reading a Secret is a 403."""

    async def get(self, ref):
        if ref.kind == "Secret":
            raise KubeError(403, 'secrets "keys" is forbidden')
        return await super().get(ref)


async def test_a_forbidden_secret_says_so_and_sends_nothing(api, runtimes):
    pod = await runtimes(api_key="s3cret")
    await add_pod(api, "qwen-runtime-a", pod.port)
    await send(api, "POST", ISVC_PATH, inference_service(spec={**SPEC, "apiKeySecret": {"name": "keys"}}))
    client = ForbiddenSecrets()
    await client.connect(kopf.ConnectionInfo(server=str(api.url).rstrip("/")))
    async with aiohttp.ClientSession() as session:
        ref = isvc_ref(NAMESPACE, "qwen")
        await AdapterRollout(client, StatusWriter(client), ref, logging.getLogger("test"), session).step()
    await client.close()
    assert adapters_ready(api) == (
        "False",
        "ApiKeyUnavailable",
        'cannot read spec.apiKeySecret keys/api-key: HTTP 403: secrets "keys" is forbidden',
    )
    assert pod.calls == []
