"""The adapter rollout as the operator runs it: the real kopf registry against kmock, its adapters daemon
talking to fake runtime pods on 127.0.0.1 (kmock runs no controllers: the tests create the pods)."""

from __future__ import annotations

import pytest
from operator_helpers import (
    ISVC_PATH,
    ISVC_RESOURCE,
    add_pod,
    condition,
    eventually,
    inference_service,
    live,
    send,
)

from fleetserve.operator import defaults
from fleetserve.operator.adapters import decide

SPEC = {
    "model": {"source": "hf://Qwen/Qwen2.5-0.5B-Instruct", "servedName": "qwen"},
    "adapters": [
        {"name": "sql", "source": "hf://org/sql-lora"},
        {"name": "chat", "source": "pvc://loras/chat"},
    ],
}
LOADED = {"sql": "org/sql-lora", "chat": f"{defaults.ADAPTER_MOUNT_PATH}/loras/chat"}


def adapters_ready(api) -> tuple[str, str] | None:
    found = condition(live(api, ISVC_RESOURCE, "qwen"), "AdaptersReady")
    return (found["status"], found["reason"]) if found else None


def adapter_entries(api) -> list[dict] | None:
    return ((live(api, ISVC_RESOURCE, "qwen") or {}).get("status") or {}).get("adapters")


@pytest.fixture()
def fast_rounds(monkeypatch) -> None:
    monkeypatch.setattr(defaults, "ADAPTER_SYNC_SECONDS", 0.2)
    monkeypatch.setattr(decide, "RETRY_BASE_SECONDS", 0.5)


async def test_the_operator_loads_adapters_reports_them_and_reloads_a_restarted_pod(
    fast_rounds, operator, runtimes
):
    a, b = (
        await runtimes(),
        await runtimes(bad={"org/sql-lora": "the adapter's rank 128 is above --max-lora-rank 64"}),
    )
    await add_pod(operator, "qwen-runtime-a", a.port)
    await add_pod(operator, "qwen-runtime-b", b.port)
    await send(operator, "POST", ISVC_PATH, inference_service(spec=SPEC))
    await eventually(lambda: adapters_ready(operator) == ("False", "LoadFailed"))
    message = condition(live(operator, ISVC_RESOURCE, "qwen"), "AdaptersReady")["message"]
    assert (
        message
        == "adapter sql on pod qwen-runtime-b: 400: the adapter's rank 128 is above --max-lora-rank 64"
    )
    assert a.loaded == LOADED and b.loaded == {"chat": LOADED["chat"]}
    assert (
        condition(live(operator, ISVC_RESOURCE, "qwen"), "Ready") is not None
    )  # reconcile's conditions stay

    b.bad.clear()  # fixed (e.g. a pod with a larger --max-lora-rank): loaded after the backoff
    await eventually(lambda: adapters_ready(operator) == ("True", "AdaptersLoaded"))
    assert adapter_entries(operator) == [
        {"name": "sql", "readyReplicas": 2, "message": ""},
        {"name": "chat", "readyReplicas": 2, "message": ""},
    ]
    a.restart()  # the process restarted: no adapters until the next round
    await eventually(lambda: a.loaded == LOADED)
