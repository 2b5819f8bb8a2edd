"""`fleetserve operator` as a process, as the chart runs it: flags, kubeconfig login, kopf.run."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

from operator_helpers import ISVC_PATH, eventually, inference_service, live, send

STARTUP_SECONDS = 30.0


def kubeconfig(url: str, path) -> str:
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: kmock\n"
        f"clusters: [{{name: kmock, cluster: {{server: '{url}'}}}}]\n"
        "users: [{name: kmock, user: {token: test-token}}]\n"
        "contexts: [{name: kmock, context: {cluster: kmock, user: kmock}}]\n"
    )
    return str(path)


async def test_the_operator_command_reconciles_and_stops_on_sigterm(api, tmp_path):
    env = {**os.environ, "KUBECONFIG": kubeconfig(str(api.url).rstrip("/"), tmp_path / "kubeconfig"),
           "FLEETSERVE_RUNTIME_IMAGE": "registry.test/fleetserve:env"}
    process = subprocess.Popen(
        [sys.executable, "-P", "-m", "fleetserve.runtime.cli", "operator", "--standalone", "--liveness", ""],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        await send(api, "POST", ISVC_PATH, inference_service())
        runtime = await eventually(lambda: live(api, "apps/v1/deployments", "qwen-runtime"), STARTUP_SECONDS)
        assert runtime["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.test/fleetserve:env"
        assert any(r.headers.get("Authorization") == "Bearer test-token" for r in list(api))
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(process.communicate, timeout=STARTUP_SECONDS)
    assert process.returncode == 0, output.decode()[-3000:]
