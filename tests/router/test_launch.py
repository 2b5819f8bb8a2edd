"""`fleetserve router` as a process: flags (the operator's included), torch-free, serving."""

from __future__ import annotations

import json
import subprocess
import sys
import typing

import pytest
from fake_worker import free_port

from fleetserve.runtime import wire
from fleetserve.runtime.router.launch import build_parser, config_from_args

CHILD = r"""
import json, sys, threading, time, urllib.error, urllib.request
from fleetserve.runtime.cli import main

PORT = int(sys.argv[1])

def probe():
    base = f"http://127.0.0.1:{PORT}"
    for _ in range(200):
        try:
            health = urllib.request.urlopen(base + "/health", timeout=1).status
            break
        except OSError:
            time.sleep(0.05)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "héllo"}]}).encode()
    request = urllib.request.Request(base + "/v1/chat/completions", body, {"Content-Type": "application/json"})
    try:
        status = urllib.request.urlopen(request, timeout=10).status
    except urllib.error.HTTPError as exc:
        status, retry_after = exc.code, exc.headers.get("Retry-After")
    metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    print(json.dumps({"health": health, "status": status, "retry_after": retry_after,
                      "held_metric": "fleetserve_router:held_requests" in metrics,
                      "torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules,
                      "engine": any(m.startswith("fleetserve.runtime.engine") for m in sys.modules)}), flush=True)
    import os
    os._exit(0)

threading.Thread(target=probe, daemon=True).start()
main(["router", "--port", str(PORT), "--worker-urls", "http://127.0.0.1:9", "--max-hold-secs", "0.2",
      "--retry-after-secs", "7", "--log-level", "warning"])
"""


def test_router_process_serves_without_torch_or_the_engine():
    port = free_port()
    out = subprocess.run([sys.executable, "-P", "-c", CHILD, str(port)], capture_output=True, text=True, timeout=60)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"health": 200, "status": 503, "retry_after": "7", "held_metric": True,
                      "torch": False, "transformers": False, "engine": False}, out.stderr


def test_router_needs_workers_or_a_service():
    out = subprocess.run([sys.executable, "-P", "-m", "fleetserve.runtime.cli", "router"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "--worker-urls or --k8s-service" in out.stderr


def test_sglang_router_flags_parse():
    args = build_parser().parse_args([
        "--host", "0.0.0.0", "--port", "8001", "--worker-urls", "http://a:30000", "http://b:30000/",
        "--policy", "power_of_two", "--cache-threshold", "0.5", "--balance-abs-threshold", "32",
        "--balance-rel-threshold", "1.2", "--eviction-interval-secs", "60", "--max-tree-size", "1000",
        "--api-key", "sk", "--log-level", "debug", "--retry-max-retries", "5", "--request-timeout-secs", "30",
        "--max-held-requests", "10", "--max-hold-secs", "2"])
    config = config_from_args(args)
    assert config.worker_urls == ["http://a:30000", "http://b:30000"] and config.policy == "power_of_two"
    assert (config.cache_aware.cache_threshold, config.cache_aware.balance_abs_threshold,
            config.cache_aware.balance_rel_threshold) == (0.5, 32, 1.2)
    assert (config.max_retries, config.max_held_requests, config.max_hold_secs, config.api_key) == (5, 10, 2.0, "sk")


def test_api_key_defaults_to_the_environment(monkeypatch):
    monkeypatch.setenv(wire.ENV_API_KEY, "from-env")
    assert config_from_args(build_parser().parse_args(["--worker-urls", "http://a"])).api_key == "from-env"


@pytest.mark.parametrize("policy", typing.get_args(__import__("fleetserve.operator.spec", fromlist=["Policy"]).Policy))
def test_the_operators_router_args_parse_with_the_routers_own_parser(policy):
    """The contract with the operator's router Deployment: every flag it passes is one the router accepts."""
    from fleetserve.operator.manifests.children import build_children
    from fleetserve.operator.manifests.meta import Owner
    from fleetserve.operator.spec import InferenceServiceSpec

    spec = InferenceServiceSpec.model_validate({"model": {"source": "hf://Qwen/Qwen2.5-0.5B-Instruct"},
                                                "router": {"policy": policy}})
    children = build_children(Owner(name="qwen", namespace="ml", uid="u"), spec, "registry.test/fleetserve:1", 1)
    router = next(c for c in children if c["kind"] == "Deployment" and c["metadata"]["name"].endswith("router"))
    container = router["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["fleetserve"] and container["args"][0] == "router"
    config = config_from_args(build_parser().parse_args(container["args"][1:]))
    assert config.policy == policy and config.port == wire.ROUTER_PORT and config.host == "0.0.0.0"
    assert config.k8s_service == "qwen-runtime" and config.k8s_namespace == "ml" and not config.worker_urls
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": wire.ROUTER_PORT}
    # discovery reads the runtime Service's EndpointSlice port by the name the router expects
    runtime_service = next(c for c in children if c["kind"] == "Service" and c["metadata"]["name"] == config.k8s_service)
    assert config.k8s_port_name in {p["name"] for p in runtime_service["spec"]["ports"]}
