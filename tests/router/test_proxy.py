"""The router's proxy against fake workers: pass-through, routing, retries, holding, adapters, keys."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from fleetserve.runtime.router.proxy import WORKER_HEADER

SYSTEM = "You are the router test's assistant. " * 12


def chat(question: str, system: str = SYSTEM, **extra) -> dict:
    return {"model": "fake-model", "messages": [{"role": "system", "content": system},
                                                {"role": "user", "content": question}], **extra}


async def post(http: aiohttp.ClientSession, url: str, body: dict, path: str = "/v1/chat/completions",
               headers: dict | None = None) -> tuple[int, bytes, dict]:
    async with http.post(url + path, json=body, headers=headers) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


async def test_streaming_and_plain_answers_pass_through_byte_for_byte(fake_workers, start_router, http):
    [worker] = await fake_workers(1)
    router = await start_router([worker.url])
    await router.wait_ready(1)
    for body in (chat("hi ✓", stream=True, stream_options={"include_usage": True}), chat("hi ✓")):
        direct = await post(http, worker.url, body)
        via = await post(http, router.url, body)
        assert via[0] == direct[0] == 200
        assert via[1] == worker.sent[-1]  # the bytes the worker wrote, untouched
        assert b'"cached_tokens"' in via[1]
        assert via[2]["Content-Type"] == direct[2]["Content-Type"] and via[2][WORKER_HEADER] == worker.url
    sent = [r["body"] for r in worker.received]
    assert sent[3] == json.dumps(chat("hi ✓")).encode()  # the request body is forwarded untouched


async def test_sse_chunks_arrive_as_the_worker_sends_them(fake_workers, start_router, http):
    [worker] = await fake_workers(1, chunk_delay=0.15)
    router = await start_router([worker.url])
    await router.wait_ready(1)
    async with http.post(router.url + "/v1/chat/completions", json=chat("x", stream=True)) as resp:
        first = await resp.content.readline()
        assert first.startswith(b"data: ")
        assert not worker.sent[-1].endswith(b"data: [DONE]\n\n")  # not buffered until the worker's end
        rest = await resp.read()
    assert rest.endswith(b"data: [DONE]\n\n")


async def test_same_prefix_same_worker_and_cached_tokens_predicted_as_reported(fake_workers, start_router, http):
    workers = await fake_workers(3)
    router = await start_router([w.url for w in workers])
    await router.wait_ready(3)
    served = []
    for i in range(6):
        status, _, headers = await post(http, router.url, chat(f"question number {i}"))
        assert status == 200
        served.append(headers[WORKER_HEADER])
    assert len(set(served)) == 1  # sequential: load stays balanced, the prefix holder keeps winning
    metrics = (await (await http.get(router.url + "/metrics")).read()).decode()
    predicted = metric(metrics, 'fleetserve_router:cached_tokens_total{source="predicted"}')
    reported = metric(metrics, 'fleetserve_router:cached_tokens_total{source="reported"}')
    assert reported > 0 and predicted == reported
    assert metric(metrics, 'fleetserve_router:decisions_total{policy="cache_aware",reason="prefix_hit"}') == 5


async def test_a_restarted_router_is_warm_from_the_workers_reports(fake_workers, start_router, http):
    workers = await fake_workers(3)
    first = await start_router([w.url for w in workers])
    await first.wait_ready(3)
    _, _, headers = await post(http, first.url, chat("warm me up"))
    holder = headers[WORKER_HEADER]
    second = await start_router([w.url for w in workers])  # no shared state with the first router
    await second.wait_ready(3)
    await asyncio.sleep(0.15)  # one cache poll
    for i in range(3):
        _, _, headers = await post(http, second.url, chat(f"other question {i}"))
        assert headers[WORKER_HEADER] == holder


async def test_evictions_reported_by_the_worker_are_forgotten(fake_workers, start_router, http):
    workers = await fake_workers(2)
    router = await start_router([w.url for w in workers])
    await router.wait_ready(2)
    _, _, headers = await post(http, router.url, chat("first"))
    holder = next(w for w in workers if w.url == headers[WORKER_HEADER])
    await asyncio.sleep(0.15)
    state = router.router.workers.get(holder.url)
    assert state is not None and state.cache.reported and not state.cache.predicted
    holder.evict_all()
    await asyncio.sleep(0.15)
    assert not state.cache.reported


async def test_503_is_retried_on_another_worker(fake_workers, start_router, http):
    busy, idle = await fake_workers(2)
    busy.num_503 = 10
    router = await start_router([busy.url, idle.url], policy="round_robin")
    await router.wait_ready(2)
    for i in range(4):
        status, _, headers = await post(http, router.url, chat(f"q{i}"))
        assert status == 200 and headers[WORKER_HEADER] == idle.url
    metrics = (await (await http.get(router.url + "/metrics")).read()).decode()
    assert metric(metrics, "fleetserve_router:retries_total") == len(busy.received) >= 2


async def test_connection_dropped_before_any_answer_byte_is_retried_without_ejecting(fake_workers, start_router, http):
    flaky, steady = await fake_workers(2)
    flaky.num_resets = 3
    router = await start_router([flaky.url, steady.url], policy="round_robin")
    await router.wait_ready(2)
    served = []
    for i in range(6):
        status, _, headers = await post(http, router.url, chat(f"reset {i}"))
        assert status == 200
        served.append(headers[WORKER_HEADER])
    assert flaky.num_resets == 0 and flaky.url in served  # dropped twice -> elsewhere; once -> same worker again
    assert {w.url for w in router.router.workers.routable()} == {flaky.url, steady.url}  # never ejected
    metrics = (await (await http.get(router.url + "/metrics")).read()).decode()
    assert metric(metrics, f'fleetserve_router:upstream_errors_total{{kind="dropped",worker="{flaky.url}"}}') == 3


async def test_503_passes_through_when_no_other_worker_can_take_it(fake_workers, start_router, http):
    [worker] = await fake_workers(1, num_503=5)
    router = await start_router([worker.url])
    await router.wait_ready(1)
    status, payload, _ = await post(http, router.url, chat("q"))
    assert status == 503 and json.loads(payload)["message"] == "queue full"


async def test_refused_connection_is_retried_and_the_dead_worker_ejected(fake_workers, start_router, http):
    alive, dead = await fake_workers(2)
    router = await start_router([alive.url, dead.url], policy="round_robin", health_check_interval_secs=5.0,
                                cache_poll_interval_secs=5.0)
    await router.wait_ready(2)
    await dead.stop()
    for i in range(4):
        status, _, headers = await post(http, router.url, chat(f"q{i}"))
        assert status == 200 and headers[WORKER_HEADER] == alive.url
    assert [w.url for w in router.router.workers.routable()] == [alive.url]


async def test_a_worker_breaking_off_mid_stream_fails_the_client_fast(fake_workers, start_router, http):
    [worker] = await fake_workers(1, break_after_chunks=2)
    router = await start_router([worker.url])
    await router.wait_ready(1)
    with pytest.raises(aiohttp.ClientPayloadError):
        async with asyncio.timeout(5):
            async with http.post(router.url + "/v1/chat/completions", json=chat("x", stream=True)) as resp:
                await resp.read()
    assert len(worker.received) == 1  # never retried once the stream began


async def test_client_disconnect_cancels_the_upstream_request(fake_workers, start_router, http):
    [worker] = await fake_workers(1, hang=True)
    router = await start_router([worker.url])
    await router.wait_ready(1)
    task = asyncio.create_task(post(http, router.url, chat("hang")))
    for _ in range(100):
        if worker.num_running:
            break
        await asyncio.sleep(0.02)
    assert worker.num_running == 1
    task.cancel()
    for _ in range(100):
        if worker.cancelled:
            break
        await asyncio.sleep(0.02)
    assert worker.cancelled == 1 and worker.num_running == 0
    state = router.router.workers.get(worker.url)
    for _ in range(50):
        if state.in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert state.in_flight == 0 and state.pending_prefill_tokens == 0  # released in finally


async def test_no_worker_holds_then_503_with_retry_after(start_router, http):
    router = await start_router(["http://127.0.0.1:9"], max_hold_secs=0.4)
    assert (await http.get(router.url + "/health")).status == 200  # holding is on
    loop = asyncio.get_running_loop()
    start = loop.time()
    task = asyncio.create_task(post(http, router.url, chat("anyone?")))
    await asyncio.sleep(0.2)
    metrics = (await (await http.get(router.url + "/metrics")).read()).decode()
    assert metric(metrics, "fleetserve_router:held_requests") == 1
    status, payload, headers = await task
    assert status == 503 and headers["Retry-After"] == "3" and json.loads(payload)["object"] == "error"
    assert loop.time() - start >= 0.4


async def test_held_request_goes_to_a_worker_that_becomes_ready(fake_workers, start_router, http):
    [worker] = await fake_workers(1)
    router = await start_router([], max_hold_secs=5.0)
    task = asyncio.create_task(post(http, router.url, chat("wait for me")))
    await asyncio.sleep(0.2)
    assert not task.done()
    router.router.workers.sync({worker.url: "ready"})  # discovery adds a worker
    status, _, headers = await asyncio.wait_for(task, 5)
    assert status == 200 and headers[WORKER_HEADER] == worker.url


@pytest.mark.parametrize("spread_secs", [10.0, 0.0])
async def test_held_requests_fill_batches_while_other_workers_start(fake_workers, start_router, http, spread_secs):
    """A cold start: 6 requests held, then worker A (batch cap 2) turns ready while B is still starting.
    A takes 2, the other 4 wait at the router (still counted as held) for B, rather than queue on A."""
    first, second = await fake_workers(2, chunk_delay=0.5, max_running=2)  # each answer lasts ~3.5 s
    router = await start_router([], max_hold_secs=30.0, held_spread_secs=spread_secs)
    bodies = [chat(f"question {i}", system=f"system prompt number {i}. " * 8, stream=True) for i in range(6)]
    tasks = [asyncio.create_task(post(http, router.url, body)) for body in bodies]
    await asyncio.sleep(0.2)
    router.router.workers.sync({first.url: "ready", second.url: "starting"})  # discovery: B's pod starts
    await until(lambda: len(first.received) >= 2)
    await asyncio.sleep(0.5)
    if spread_secs == 0:  # spreading off: everything held goes to the first ready worker
        await until(lambda: len(first.received) == 6)
    else:
        assert len(first.received) == 2 and not second.received
        metrics = (await (await http.get(router.url + "/metrics")).read()).decode()
        assert metric(metrics, "fleetserve_router:held_requests") == 4  # the autoscaler still sees them
        router.router.workers.sync({first.url: "ready", second.url: "ready"})
    answers = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert [status for status, _, _ in answers] == [200] * 6
    if spread_secs:
        assert len(second.received) >= 2 and len(first.received) + len(second.received) == 6


async def until(check, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_holding_off_and_full_hold_answer_503_at_once(start_router, http):
    router = await start_router(["http://127.0.0.1:9"], max_held_requests=0)
    assert (await http.get(router.url + "/health")).status == 503
    status, _, headers = await post(http, router.url, chat("q"))
    assert status == 503 and "Retry-After" in headers


async def test_adapter_requests_go_only_to_workers_holding_it(fake_workers, start_router, http):
    plain, with_sql = await fake_workers(2)
    with_sql.adapters = {"sql"}
    router = await start_router([plain.url, with_sql.url], policy="round_robin")
    await router.wait_ready(2)
    await asyncio.sleep(0.1)
    for body in (chat("q", model="fake-model:sql"), chat("q", lora_path="sql"),
                 chat("q", model="fake-model:sql", lora_path="nope"), chat("q", model="sql")):
        status, _, headers = await post(http, router.url, body)
        assert status == 200 and headers[WORKER_HEADER] == with_sql.url
    status, payload, _ = await post(http, router.url, chat("q", model="fake-model:missing"))
    error = json.loads(payload)
    assert status == 404 and set(error) == {"object", "message", "type", "param", "code"} and error["code"] == 404
    # a lora_path that is a folder: the router cannot name it, any worker may take it (the worker decides)
    assert (await post(http, router.url, chat("q", lora_path="/adapters/sql")))[0] == 200
    with_sql.adapters = set()  # unloaded: the router follows on its next poll
    await asyncio.sleep(0.15)
    assert (await post(http, router.url, chat("q", lora_path="sql")))[0] == 404


async def test_models_is_the_union_of_ready_workers(fake_workers, start_router, http):
    a, b = await fake_workers(2)
    a.adapters, b.adapters = {"sql"}, {"chat", "sql"}
    router = await start_router([a.url, b.url])
    await router.wait_ready(2)
    models = await (await http.get(router.url + "/v1/models")).json()
    assert [m["id"] for m in models["data"]] == ["fake-model", "fake-model:sql", "fake-model:chat"]
    card = await (await http.get(router.url + "/v1/models/fake-model")).json()
    assert card["max_model_len"] == 4096
    missing = await http.get(router.url + "/v1/models/nope")
    assert missing.status == 404 and (await missing.json())["object"] == "error"


async def test_api_key_is_checked_and_forwarded(fake_workers, start_router, http):
    [worker] = await fake_workers(1, api_key="sk-test")
    router = await start_router([worker.url], api_key="sk-test")
    await router.wait_ready(1)
    assert (await post(http, router.url, chat("q")))[0] == 401
    assert (await post(http, router.url, chat("q"), headers={"Authorization": "Bearer wrong"}))[0] == 401
    status, _, _ = await post(http, router.url, chat("q"), headers={"Authorization": "Bearer sk-test"})
    assert status == 200 and worker.received[-1]["headers"]["Authorization"] == "Bearer sk-test"
    assert (await http.get(router.url + "/health")).status == 200  # probes carry no key
    assert (await http.get(router.url + "/metrics")).status == 200


async def test_completions_and_embeddings_are_proxied(fake_workers, start_router, http):
    [worker] = await fake_workers(1)
    router = await start_router([worker.url])
    await router.wait_ready(1)
    status, payload, _ = await post(http, router.url, {"model": "fake-model", "prompt": "Once upon"}, "/v1/completions")
    assert status == 200 and json.loads(payload)["choices"][0]["text"]
    status, payload, _ = await post(http, router.url, {"model": "fake-model", "input": "x"}, "/v1/embeddings")
    assert status == 200 and json.loads(payload)["data"][0]["embedding"] == [0.1, 0.2]


async def test_workers_without_cache_state_are_routed_on_predictions(fake_workers, start_router, http):
    workers = await fake_workers(2, has_cache_state=False)
    router = await start_router([w.url for w in workers])
    await router.wait_ready(2)
    served = {(await post(http, router.url, chat(f"q{i}")))[2][WORKER_HEADER] for i in range(4)}
    assert len(served) == 1
    assert all(w.supports_cache_state is False for w in router.router.workers.workers.values())


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.rsplit(" ", 1)[0] == name:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")
