"""The user's path, timed: apply an InferenceService → first answer through the router; delete → nothing left.

    python -P benchmarks/cluster_e2e.py [--runs 3] [--replicas 2]

Runs the local test cluster (tests/cluster/: kmock as the API server, the chart applied, the real
operator, router and runtime processes on 127.A.B.N; see tests/cluster/cluster.py for what stands in
for what) with examples/inferenceservice-demo.yaml (the demo model). Per run it prints:

- apply → first answer: from the InferenceService's creation until the first chat completion answered
  through the router's address (polled every 100 ms; a refused or failed request counts as not yet);
- apply → Ready: until the operator reports Ready=True;
- delete → no objects: from the DELETE until no object the InferenceService owned (transitively) exists;
- delete → no processes: until every pod's process has exited.

The operator is started once (helm install) and each run applies and deletes the InferenceService.
Times include the stand-in's probe period (declared periods × 0.1) and its 0.2 s controller tick.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import openai
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "cluster"))

from cluster import LocalCluster, eventually  # noqa: E402

EXAMPLE = ROOT / "examples" / "inferenceservice-demo.yaml"
NAMESPACE = "bench"
ISVC = "fleetserve.io/v1alpha1/inferenceservices"
CHART_VALUES = {"peering": {"enabled": False}}


async def first_answer(cluster: LocalCluster, name: str, deadline: float) -> float:
    while time.monotonic() < deadline:
        url = cluster.service_url(NAMESPACE, name)
        if url is not None:
            client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="EMPTY", max_retries=0, timeout=30)
            try:
                reply = await client.chat.completions.create(
                    model="demo", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
                if reply.choices:
                    return time.monotonic()
            except openai.OpenAIError:
                pass
            finally:
                await client.close()
        await asyncio.sleep(0.1)
    raise TimeoutError("no answer through the router")


def is_ready(cluster: LocalCluster, name: str) -> bool:
    live = cluster.api.live(ISVC, NAMESPACE, name) or {}
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (live.get("status") or {}).get("conditions") or [])


async def one_run(cluster: LocalCluster, replicas: int, timeout: float) -> dict[str, float]:
    isvc = yaml.safe_load(EXAMPLE.read_text())
    isvc["spec"]["replicas"] = {"count": replicas}
    name = isvc["metadata"]["name"]
    start = time.monotonic()
    await cluster.apply(isvc, NAMESPACE)
    ready_task = asyncio.create_task(eventually(lambda: is_ready(cluster, name), timeout, "Ready"))
    answered = await first_answer(cluster, name, start + timeout)
    await ready_task
    ready = time.monotonic()  # polled every 100 ms; at most that late
    uid = cluster.api.live(ISVC, NAMESPACE, name)["metadata"]["uid"]
    deleted = time.monotonic()
    await cluster.delete("InferenceService", name, NAMESPACE)
    await eventually(lambda: cluster.api.live(ISVC, NAMESPACE, name) is None and not cluster.owned_by(uid),
                     timeout, "no objects")
    no_objects = time.monotonic()
    assert cluster.kubelet is not None
    await eventually(lambda: not [p for p in cluster.kubelet.pods.values() if p.namespace == NAMESPACE],
                     timeout, "no processes")
    return {"apply → first answer": answered - start, "apply → Ready": ready - start,
            "delete → no objects": no_objects - deleted, "delete → no processes": time.monotonic() - deleted}


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="fleetserve-cluster-") as scratch:
        workdir = Path(args.workdir) if args.workdir else Path(scratch)
        async with LocalCluster(workdir) as cluster:
            await cluster.install_chart(CHART_VALUES)
            results = []
            for run in range(args.runs):
                result = await one_run(cluster, args.replicas, args.timeout)
                results.append(result)
                print(f"run {run + 1}: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.items()), flush=True)
    print(f"median of {args.runs} runs, {args.replicas} runtime replicas of demo://llama-tiny:")
    for key in results[0]:
        print(f"  {key:<24} {statistics.median(r[key] for r in results):6.1f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--workdir", help="keep the pods' directories and logs here (default: a temporary one)")
    asyncio.run(main(parser.parse_args()))
