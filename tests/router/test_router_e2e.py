"""The real router process in front of real `fleetserve serve` workers (tiny demo model), openai client.

One module-scoped fleet, tests in order: answers pass through; a shared system prompt stays on one
worker and the router's predicted cached tokens equal what the worker reports; a worker that comes
up later gets traffic; a worker killed mid-run fails only its own streams, fast; with no worker left
requests are held, then answered 503. LoRA: requests for an adapter go only to workers that have it
loaded, and follow a load at run time.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from fake_worker import free_port

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))
from serve_process import ServeProcess, start_server

pytestmark = pytest.mark.slow

WORKER_ARGS = ["--enable-cache-report", "--skip-server-warmup", "--context-length", "2048",
               "--kv-cache-memory-gb", "0.05", "--log-level", "warning"]
HOLD_SECS = 2.0
SYSTEM = "You are the fleet's assistant. Keep answers short and cite the manual. " * 6
MANUAL = "The manual, chapter by chapter, as the assistant must quote it. " * 6  # only one test uses it
WORKER_HEADER = "X-Fleetserve-Worker"


class Fleet:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.workers: list[ServeProcess] = []
        self.late_port = free_port()
        self.router_port = free_port()
        self.router: subprocess.Popen | None = None
        self.late: ServeProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.router_port}"

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key="EMPTY", max_retries=0, timeout=60)

    def start(self) -> None:
        from fleetserve.runtime.demo import default_demo_model_dir
        from tests.runtime.lora.adapters import AdapterSpec, make_adapter

        self.adapter = make_adapter(default_demo_model_dir(), self.tmp / "sql-adapter",
                                    AdapterSpec("sql", 4, 8, ("q_proj", "v_proj"), seed=1))
        lora = [["--enable-lora", "--max-lora-rank", "8"],  # worker 0 loads `sql` later, at run time
                ["--enable-lora", "--max-lora-rank", "8", "--lora-paths", f"sql={self.adapter}"]]
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            self.workers = list(pool.map(lambda i: start_server(WORKER_ARGS + lora[i], self.tmp / f"worker{i}.log"),
                                         range(2)))
        urls = [w.url for w in self.workers] + [f"http://127.0.0.1:{self.late_port}"]
        self.router_log = (self.tmp / "router.log").open("w")
        self.router = subprocess.Popen(
            [sys.executable, "-P", "-m", "fleetserve.runtime.cli", "router", "--port", str(self.router_port),
             "--worker-urls", *urls, "--max-hold-secs", str(HOLD_SECS), "--cache-poll-interval-secs", "0.1",
             "--health-check-interval-secs", "0.2", "--log-level", "info"],
            stdout=self.router_log, stderr=subprocess.STDOUT)
        self.wait_workers(2)
        # the third worker starts loading only now, while the first tests run: it joins without a restart
        self.late = spawn_worker(self.late_port, self.tmp / "worker-late.log")

    def workers_state(self) -> list[dict]:
        return httpx.get(self.url + "/workers", timeout=5).json()["workers"]

    def wait_workers(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if sum(w["phase"] == "ready" for w in self.workers_state()) == n:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"router did not see {n} ready workers: {(self.tmp / 'router.log').read_text()}")

    def metrics(self) -> dict[str, float]:
        out = {}
        for line in httpx.get(self.url + "/metrics", timeout=5).text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def stop(self) -> None:
        if self.router is not None:
            self.router.terminate()
            self.router.wait(20)
        for worker in {id(w): w for w in [*self.workers, self.late] if w is not None}.values():
            worker.stop()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    fleet = Fleet(tmp_path_factory.mktemp("fleet"))
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()


def ask(question: str, system: str = SYSTEM) -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]


def test_answers_pass_through_with_usage_and_cached_tokens(fleet):
    direct = openai.OpenAI(base_url=fleet.workers[0].base_url, api_key="EMPTY", max_retries=0)
    routed = fleet.client()
    params = {"model": "default", "messages": ask("Say hello ü"), "max_tokens": 12, "temperature": 0}
    a = direct.chat.completions.create(**params)
    b = routed.chat.completions.create(**params)
    assert b.choices[0].message.content == a.choices[0].message.content  # same model, greedy
    assert b.usage.prompt_tokens == a.usage.prompt_tokens and b.usage.prompt_tokens_details is not None
    assert b.system_fingerprint == a.system_fingerprint
    chunks = list(routed.chat.completions.create(**params, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == a.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens_details.cached_tokens is not None
    completion = routed.completions.create(model="default", prompt="Once upon a time", max_tokens=5, temperature=0)
    assert completion.usage.completion_tokens == 5


def test_shared_system_prompt_stays_on_one_worker_and_predictions_match_reports(fleet):
    client = fleet.client()
    before = fleet.metrics()
    served, cached, states = [], [], []
    for i in range(5):
        states.append(fleet.workers_state())
        raw = client.chat.completions.with_raw_response.create(
            model="default", messages=ask(f"Question {i}: what is in chapter {i}?", system=MANUAL), max_tokens=4,
            temperature=0)
        served.append(raw.headers[WORKER_HEADER])
        cached.append(raw.parse().usage.prompt_tokens_details.cached_tokens)
        time.sleep(0.3)  # let the router poll the worker's cache (sequential traffic: balanced load)
    assert len(set(served)) == 1, (served, states)
    assert cached[0] == 0 and all(c >= len(MANUAL) // 8 for c in cached[1:])  # the system prompt's pages hit
    after = fleet.metrics()
    key_p, key_r = 'fleetserve_router:cached_tokens_total{source="predicted"}', \
        'fleetserve_router:cached_tokens_total{source="reported"}'
    predicted = after[key_p] - before.get(key_p, 0)
    reported = after[key_r] - before.get(key_r, 0)
    assert reported == sum(cached) and predicted == reported  # the router's token ids are the worker's


def test_lora_requests_go_where_the_adapter_is_and_follow_run_time_loads(fleet):
    client = fleet.client()
    plain, with_sql = fleet.workers
    for model in ("default:sql", "sql"):
        raw = client.chat.completions.with_raw_response.create(model=model, messages=ask(f"adapter via {model}"),
                                                               max_tokens=3)
        assert raw.headers[WORKER_HEADER] == with_sql.url and raw.parse().choices[0].message.content is not None
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="default:nope", messages=ask("x"), max_tokens=3)
    assert missing.value.body["code"] == 404 or missing.value.status_code == 404
    assert "sql" in {m.id for m in client.models.list()}
    httpx.post(plain.url + "/load_lora_adapter", json={"lora_name": "sql", "lora_path": str(fleet.adapter)},
               timeout=60).raise_for_status()
    deadline = time.monotonic() + 10
    while not all("sql" in w["adapters"] for w in fleet.workers_state() if w["phase"] == "ready"):
        assert time.monotonic() < deadline, fleet.workers_state()
        time.sleep(0.1)

    def one(i: int) -> str:
        raw = client.chat.completions.with_raw_response.create(
            model="default:sql", messages=ask(f"lora {i}", system=f"Adapter system prompt {i}."), max_tokens=16)
        return raw.headers[WORKER_HEADER]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        served = set(pool.map(one, range(8)))
    assert served == {plain.url, with_sql.url}


def test_a_worker_that_comes_up_later_gets_traffic(fleet):
    wait_healthy(fleet.late)
    fleet.workers.append(fleet.late)
    fleet.wait_workers(3)
    client = fleet.client()

    def one(i: int) -> str:
        raw = client.chat.completions.with_raw_response.create(
            model="default", messages=ask(f"cold {i}", system=f"Different system prompt number {i}."), max_tokens=24)
        return raw.headers[WORKER_HEADER]

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        served = list(pool.map(one, range(6)))
    assert fleet.late.url in served


def spawn_worker(port: int, log: Path) -> ServeProcess:
    """`fleetserve serve` on a chosen port, not waited for (start_server picks its own port and waits)."""
    command = [sys.executable, "-P", "-m", "fleetserve.runtime.cli", "serve", *WORKER_ARGS, "--port", str(port)]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    return ServeProcess(process, port, log)


def wait_healthy(server: ServeProcess, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.log()
        try:
            if httpx.get(server.url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise AssertionError(server.log())


def test_a_worker_killed_mid_run_fails_only_its_streams_fast(fleet):
    client = fleet.client()
    victim = fleet.workers[0]
    results: dict[int, dict] = {}
    started = threading.Barrier(7, timeout=60)

    def stream(i: int) -> None:
        out: dict = {"worker": None, "done": False, "error": None}
        results[i] = out
        try:
            with client.chat.completions.with_streaming_response.create(
                model="default", messages=ask(f"long story {i}", system=f"Storyteller {i}."), max_tokens=400,
                stream=True, extra_body={"ignore_eos": True},
            ) as response:
                out["worker"] = response.headers[WORKER_HEADER]
                first = True
                for line in response.iter_lines():
                    if first and line.startswith("data:"):
                        first = False
                        started.wait()
                    if line == "data: [DONE]":
                        out["done"] = True
        except Exception as exc:  # what a killed worker looks like to the client
            out["error"] = repr(exc)
            if first:
                started.abort()
        out["end"] = time.monotonic()

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    started.wait()
    victim.process.kill()
    killed_at = time.monotonic()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a stream hung"
    on_victim = [r for r in results.values() if r["worker"] == victim.url]
    others = [r for r in results.values() if r["worker"] != victim.url]
    assert on_victim and others, results
    assert all(r["error"] and not r["done"] and r["end"] - killed_at < 10 for r in on_victim), results
    assert all(r["done"] and not r["error"] for r in others), results
    for i in range(4):  # the rest keeps working: refused connections are retried, the dead worker ejected
        answer = client.chat.completions.create(model="default", messages=ask(f"after {i}"), max_tokens=3)
        assert answer.choices[0].finish_reason == "length"


def test_no_worker_left_holds_requests_then_503(fleet):
    for worker in fleet.workers[1:]:
        worker.process.kill()
    fleet.wait_workers(0)
    client = fleet.client()
    start = time.monotonic()
    holder: dict = {}

    def request() -> None:
        try:
            client.chat.completions.create(model="default", messages=ask("anyone?"), max_tokens=3)
        except openai.APIStatusError as exc:
            holder["status"], holder["retry_after"] = exc.status_code, exc.response.headers.get("Retry-After")

    thread = threading.Thread(target=request)
    thread.start()
    time.sleep(HOLD_SECS / 2)
    assert fleet.metrics()["fleetserve_router:held_requests"] == 1
    thread.join(30)
    assert holder == {"status": 503, "retry_after": "5"} and time.monotonic() - start >= HOLD_SECS
