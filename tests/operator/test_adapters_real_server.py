"""The adapter rollout against a real `fleetserve serve` process (the tiny demo model) and a real PEFT
adapter: the rollout loads it, the official openai client gets an answer from `model: BASE:NAME`, a
broken adapter shows the runtime's own 400 reason, and a restarted process gets the adapter back.

The adapter is a pvc:// source: the claim's mount (ADAPTER_MOUNT_PATH) is pointed at a temporary
directory, as the kubelet would mount the claim there.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import httpx
import kmock
import kopf
import pytest
from openai import OpenAI
from operator_helpers import (
    ISVC_PATH,
    ISVC_RESOURCE,
    NAMESPACE,
    PODS,
    add_pod,
    condition,
    inference_service,
    live,
    send,
)

from fleetserve.operator import defaults
from fleetserve.operator.adapters.loop import AdapterRollout
from fleetserve.operator.handlers import isvc_ref
from fleetserve.operator.kube import KubeClient
from fleetserve.operator.status.writer import StatusWriter
from tests.e2e.serve_process import ServeProcess, start_server
from tests.runtime.lora.adapters import AdapterSpec, make_adapter

pytestmark = pytest.mark.timeout(300)

BASE = "base"
POD = "qwen-runtime-a"
SQL = AdapterSpec("sql", 4, 8, ("q_proj", "v_proj"), seed=7)


@pytest.fixture(scope="module")
def adapter_root(demo_model, tmp_path_factory) -> Path:
    """The claim "loras" as the pod would see it: sql/ is a PEFT adapter, broken/ lacks its config."""
    root = tmp_path_factory.mktemp("claims")
    make_adapter(demo_model("llama"), root / "loras" / "sql", SQL)
    (root / "loras" / "broken").mkdir()
    return root


def serve(base: Path, log: Path) -> ServeProcess:
    return start_server(
        [
            "--model-path", str(base), "--served-model-name", BASE, "--dtype", "float32", "--device", "cpu",
            "--page-size", "4", "--kv-cache-memory-gb", "0.02", "--log-level", "warning",
            "--enable-lora", "--max-lora-rank", "16",
        ],
        log,
    )  # fmt: skip


@pytest.fixture()
def server(demo_model, tmp_path) -> Iterator[ServeProcess]:
    proc = serve(demo_model("llama"), tmp_path / "serve.log")
    yield proc
    proc.stop()


@pytest.fixture()
async def rollout(api: kmock.KubernetesEmulator, adapter_root, monkeypatch) -> AsyncIterator[AdapterRollout]:
    monkeypatch.setattr(defaults, "ADAPTER_MOUNT_PATH", str(adapter_root))
    client = KubeClient()
    await client.connect(kopf.ConnectionInfo(server=str(api.url).rstrip("/")))
    async with aiohttp.ClientSession() as session:
        yield AdapterRollout(
            client, StatusWriter(client), isvc_ref(NAMESPACE, "qwen"), logging.getLogger("test"), session
        )
    await client.close()


def adapters_ready(api) -> tuple[str, str, str]:
    found = condition(live(api, ISVC_RESOURCE, "qwen"), "AdaptersReady") or {}
    return found.get("status", ""), found.get("reason", ""), found.get("message", "")


def ask(proc: ServeProcess, model: str) -> str:
    client = OpenAI(base_url=proc.base_url, api_key="none", max_retries=0, timeout=60)
    reply = client.completions.create(model=model, prompt="Once upon a time", max_tokens=4, temperature=0)
    assert reply.model == model
    return reply.choices[0].text


async def test_the_rollout_loads_a_real_adapter_that_the_openai_client_then_uses(
    api, rollout, server, demo_model, adapter_root, tmp_path
):
    spec = {
        "model": {"source": "pvc://models/llama", "servedName": BASE},
        "adapters": [{"name": "sql", "source": "pvc://loras/sql"}],
    }
    await add_pod(api, POD, server.port)
    await send(api, "POST", ISVC_PATH, inference_service(spec=spec))
    await rollout.step()
    assert adapters_ready(api)[:2] == ("True", "AdaptersLoaded")
    # /v1/models reports the path the rollout sent as the root, so the next round finds nothing to do
    models = httpx.get(f"{server.base_url}/models", timeout=10).json()["data"]
    assert {m["id"]: m["root"] for m in models if m["parent"]} == {"sql": str(adapter_root / "loras" / "sql")}
    answer = ask(server, f"{BASE}:sql")
    assert answer and answer != ask(server, BASE)  # the adapter changes the greedy output

    # A broken adapter: the runtime's 400 reason reaches the condition, the good one keeps serving.
    broken = {"adapters": [*spec["adapters"], {"name": "broken", "source": "pvc://loras/broken"}]}
    await send(api, "PATCH", f"{ISVC_PATH}/qwen", {"spec": broken})
    await rollout.step()
    ready, reason, message = adapters_ready(api)
    assert (ready, reason) == ("False", "LoadFailed")
    assert message.startswith(f"adapter broken on pod {POD}: 400: ") and "adapter_config.json" in message
    assert ask(server, f"{BASE}:sql") == answer
    await send(api, "PATCH", f"{ISVC_PATH}/qwen", {"spec": {"adapters": spec["adapters"]}})

    # The process restarts (a new one, on another port of the same pod): it comes back without adapters.
    server.stop()
    restarted = serve(demo_model("llama"), tmp_path / "restarted.log")
    try:
        pod_spec = {
            "containers": [{"name": "runtime", "ports": [{"name": "http", "containerPort": restarted.port}]}]
        }
        await send(api, "PATCH", f"{PODS}/{POD}", {"spec": pod_spec})
        await rollout.step()
        assert adapters_ready(api)[:2] == ("True", "AdaptersLoaded")
        assert ask(restarted, f"{BASE}:sql") == answer
    finally:
        restarted.stop()
