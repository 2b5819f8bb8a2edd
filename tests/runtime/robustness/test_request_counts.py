"""The engine's running and waiting counts (admission's queue limit, the num_requests_* metrics) are
requests: a request with n choices counts once."""

from __future__ import annotations

from fleetserve.runtime.engine.config import EngineConfig
from fleetserve.runtime.engine.engine import LLMEngine
from fleetserve.runtime.engine.types import SamplingParams
from fleetserve.runtime.server.admission import Admission


def test_a_request_with_four_choices_counts_once(demo_model):
    engine = LLMEngine.from_config(EngineConfig(model_path=str(demo_model("llama")), device="cpu", page_size=4,
                                                num_pages=256, max_running_requests=4))
    params = SamplingParams(max_tokens=3, n=4, ignore_eos=True)
    engine.add_request("four", [1, 2, 3, 4, 5, 6, 7], params)
    engine.add_request("one", [9, 8, 7], SamplingParams(max_tokens=3, ignore_eos=True))
    stats = engine.stats()
    assert (stats.num_running, stats.num_waiting) == (0, 2)
    admission = Admission(max_running_requests=4, max_queued_requests=2, stats=engine.stats)
    assert not admission.is_full(0)  # 2 requests waiting, not 5 sequences
    engine.step()  # sequence 0 of "four" and "one" run; the 3 siblings wait for the prompt's pages
    stats = engine.stats()
    assert (stats.num_running, stats.num_waiting) == (2, 0)
    while engine.has_unfinished_requests():
        engine.step()
    stats = engine.stats()
    assert (stats.num_running, stats.num_waiting, stats.num_used_pages) == (0, 0, 0)
