"""Flags the step loop could never run with are refused at start-up; -1 means no chunking (SGLang)."""

from __future__ import annotations

import pytest

from fleetserve.runtime.engine.config import EngineConfig
from fleetserve.runtime.engine.engine import LLMEngine
from fleetserve.runtime.engine.types import EngineError, SamplingParams
from fleetserve.runtime.server.launch import build_parser, check_args, engine_config


def check(capsys, *argv: str) -> str:
    """check_args' error message (argparse prints it and exits with status 2), or "" when accepted."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    try:
        check_args(parser, args)
    except SystemExit as exc:
        assert exc.code == 2
        return capsys.readouterr().err
    return ""


@pytest.mark.parametrize(("argv", "expected"), [
    (("--max-running-requests", "0"), "--max-running-requests must be at least 1"),
    (("--chunked-prefill-size", "0"), "--chunked-prefill-size must be at least 1, or -1"),
    (("--chunked-prefill-size", "-2"), "--chunked-prefill-size must be at least 1, or -1"),
    (("--chunked-prefill-size", "64"), "must be at least --max-running-requests (256)"),
    (("--max-queued-requests", "-1"), "--max-queued-requests must be 0 or more"),
    (("--attention-backend", "flashinfer"), "the FlashInfer backend is not implemented yet"),
    (("--max-prefill-tokens-with-decodes", "0"), "--max-prefill-tokens-with-decodes must be at least 1"),
])
def test_unrunnable_flags_are_refused(capsys, argv, expected):
    assert expected in check(capsys, *argv)


def test_minus_one_means_no_chunking(capsys):
    assert check(capsys, "--chunked-prefill-size", "-1") == ""
    assert check(capsys, "--chunked-prefill-size", "64", "--max-running-requests", "64") == ""
    assert engine_config(build_parser().parse_args(["--chunked-prefill-size", "-1"]), "/m").max_num_batched_tokens is None
    capped = engine_config(build_parser().parse_args(["--max-prefill-tokens-with-decodes", "256"]), "/m")
    assert capped.max_prefill_tokens_with_decodes == 256


def test_no_chunking_prefills_a_long_prompt_in_one_step(demo_model):
    engine = LLMEngine.from_config(EngineConfig(model_path=str(demo_model("llama")), device="cpu", page_size=4,
                                                num_pages=256, max_num_batched_tokens=None))
    assert engine.scheduler.max_num_batched_tokens == engine.model_config.max_model_len
    engine.add_request("long", [(7 * i) % 200 + 1 for i in range(600)], SamplingParams(max_tokens=1))
    engine.step()
    assert not engine.has_unfinished_requests()  # 600 prompt tokens and the one output token in one step


@pytest.mark.parametrize(("field", "value"), [("max_num_batched_tokens", 0), ("max_running_requests", 0),
                                              ("attention_backend", "flashinfer")])
def test_the_engine_config_refuses_them_before_loading(field, value):
    with pytest.raises(EngineError, match=r"at least 1|not implemented yet"):
        EngineConfig(model_path="/nonexistent", **{field: value}).validate()
