"""`fleetserve serve --dp N`: N workers behind the built-in router, children tied to the parent."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

import httpx
import openai

from fleetserve.runtime.server.data_parallel import router_argv, worker_argv
from tests.e2e.serve_process import free_port

START_TIMEOUT_S = 180.0


def test_workers_get_the_flags_but_not_the_front_ones():
    argv = ["--dp", "2", "--host=0.0.0.0", "--port", "9000", "--page-size", "4", "--enable-cache-report"]
    assert worker_argv(argv, 9001) == ["--page-size", "4", "--enable-cache-report", "--host", "127.0.0.1",
                                       "--port", "9001"]
    args = argparse.Namespace(host="0.0.0.0", port=9000, log_level="info", api_key="k")
    assert router_argv(args, ["http://127.0.0.1:9001"]) == [
        "--host", "0.0.0.0", "--port", "9000", "--policy", "cache_aware", "--log-level", "info",
        "--worker-urls", "http://127.0.0.1:9001", "--api-key", "k"]


def wait_healthy(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, "fleetserve serve --dp exited"
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("--dp 2 did not become healthy")


def is_listening(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0)
    except httpx.HTTPError:
        return False
    return True


def test_two_workers_behind_the_router_die_with_their_parent(demo_model, tmp_path):
    port = free_port()
    while is_listening(port + 1) or is_listening(port + 2):
        port = free_port()
    command = [sys.executable, "-P", "-m", "fleetserve.runtime.cli", "serve", "--dp", "2", "--port", str(port),
               "--model-path", str(demo_model("llama")), "--skip-server-warmup", "--enable-cache-report",
               "--page-size", "4"]
    with (tmp_path / "dp.log").open("w") as log:
        parent = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        wait_healthy(f"http://127.0.0.1:{port}", parent)
        for worker in (port + 1, port + 2):
            wait_healthy(f"http://127.0.0.1:{worker}", parent)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        system = "You are a terse assistant. Answer in as few words as you can, please."
        for question in ("Hello?", "Why?", "How?"):
            reply = client.chat.completions.create(
                model="default", max_tokens=3,
                messages=[{"role": "system", "content": system}, {"role": "user", "content": question}])
            assert reply.usage.completion_tokens == 3
        served = [httpx.get(f"http://127.0.0.1:{w}/get_server_info").json()["engine"]["prefix_cache_queries"]
                  for w in (port + 1, port + 2)]
        assert sum(served) > 0  # the answers came from the workers
    finally:
        parent.send_signal(signal.SIGKILL)  # no chance to clean up: the children must go by themselves
        parent.wait()
    deadline = time.monotonic() + 30
    while (is_listening(port) or is_listening(port + 1) or is_listening(port + 2)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(is_listening(p) for p in (port, port + 1, port + 2)), (tmp_path / "dp.log").read_text()
