"""`fleetserve bench` end to end against the fake server, writing result.json."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from fleetserve.runtime.bench.main import main


def run_cli(server, tokenizer_dir, tmp_path, *extra: str) -> tuple[int, dict | None]:
    output = tmp_path / "result.json"
    argv = ["--base-url", server.base_url, "--tokenizer", str(tokenizer_dir), "--output", str(output)]
    code = main([*argv, "--no-progress", *extra])
    return code, json.loads(output.read_text()) if output.exists() else None


def test_random_workload_end_to_end(fake_server, tokenizer_dir, tmp_path, capsys):
    fake_server.behaviour.ttft_s, fake_server.behaviour.itl_s = 0.1, 0.02
    code, result = run_cli(
        fake_server,
        tokenizer_dir,
        tmp_path,
        "--num-prompts",
        "6",
        "--random-input-len",
        "32",
        "--random-output-len",
        "5",
        "--max-concurrency",
        "3",
        "--ignore-eos",
        "--seed",
        "9",
    )
    assert code == 0
    summary = result["summary"]
    assert (summary["completed"], summary["failed"]) == (6, 0)
    assert summary["total_input_tokens"] == 6 * 32
    assert summary["total_output_tokens"] == 6 * 5
    assert summary["output_token_source"] == "usage"
    # The server waits 100 ms before the first token and 20 ms between tokens: no figure can be below
    # that, and each request's latency is its TTFT plus its inter-token gaps (no upper bound on time:
    # a loaded machine stretches every figure).
    assert summary["mean_ttft_ms"] >= 100.0 and summary["median_itl_ms"] >= 20.0
    assert summary["mean_e2el_ms"] >= 180.0
    for request in result["requests"]:
        assert request["latency_ms"] == pytest.approx(request["ttft_ms"] + sum(request["itl_ms"]), abs=0.01)
    assert summary["request_throughput"] == 6 / summary["duration"]
    assert result["config"]["model"] == "fake-model"  # taken from /v1/models
    assert len(result["requests"]) == 6 and all(len(r["itl_ms"]) == 4 for r in result["requests"])
    received = fake_server.behaviour.received
    assert len(received) == 7  # one warm-up request, then the six measured
    assert all(body["ignore_eos"] is True for body in received)
    table = capsys.readouterr().out
    assert "Successful requests:" in table and "TTFT" in table


def test_failures_are_counted_and_reported(fake_server, tokenizer_dir, tmp_path, capsys):
    code, result = run_cli(
        fake_server,
        tokenizer_dir,
        tmp_path,
        "--model",
        "fail-503",
        "--warmup-requests",
        "0",
        "--num-prompts",
        "4",
        "--random-input-len",
        "8",
        "--random-output-len",
        "2",
    )
    assert code == 1  # nothing succeeded
    assert result["summary"]["failed"] == 4
    assert result["summary"]["errors"] == {"HTTP 503": 4}
    assert result["summary"]["mean_ttft_ms"] is None
    assert "HTTP 503:" in capsys.readouterr().out


def test_failed_warmup_stops_the_run(fake_server, tokenizer_dir, tmp_path, capsys):
    code, result = run_cli(fake_server, tokenizer_dir, tmp_path, "--model", "drop", "--num-prompts", "2")
    assert code == 1 and result is None
    assert "warm-up failed: RemoteProtocolError" in capsys.readouterr().err


def test_lora_mix_and_shared_prefix_over_chat(fake_server, tokenizer_dir, tmp_path):
    code, result = run_cli(
        fake_server,
        tokenizer_dir,
        tmp_path,
        "--endpoint",
        "/v1/chat/completions",
        "--dataset",
        "shared-prefix",
        "--sp-num-groups",
        "2",
        "--sp-prompts-per-group",
        "3",
        "--sp-system-prompt-len",
        "40",
        "--sp-question-len",
        "8",
        "--sp-output-len",
        "3",
        "--lora-names",
        "a,b",
        "--warmup-requests",
        "0",
    )
    assert code == 0
    assert result["summary"]["completed"] == 6
    assert result["summary"]["total_input_tokens"] == 6 * 48
    models = Counter(body["model"] for body in fake_server.behaviour.received)
    assert models == {"fake-model:a": 3, "fake-model:b": 3}
    assert all("messages" in body for body in fake_server.behaviour.received)


def test_warmup_touches_every_adapter_and_vllm_form_names_them_as_models(
    fake_server, tokenizer_dir, tmp_path
):
    code, _ = run_cli(
        fake_server,
        tokenizer_dir,
        tmp_path,
        "--model",
        "base",
        "--num-prompts",
        "6",
        "--random-input-len",
        "8",
        "--random-output-len",
        "2",
        "--lora-names",
        "a,b,c",
        "--lora-as-model",
        "--warmup-requests",
        "3",
    )
    assert code == 0
    received = [body["model"] for body in fake_server.behaviour.received]
    assert sorted(received[:3]) == ["a", "b", "c"]  # the warm-up, one request per adapter
    assert Counter(received[3:]) == {"a": 2, "b": 2, "c": 2}


def test_file_workload_without_usage_counts_with_the_tokenizer(fake_server, tokenizer_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "ka to ri", "output_len": 4}\n"ne sa mu"\n')
    code, result = run_cli(
        fake_server,
        tokenizer_dir,
        tmp_path,
        "--model",
        "no-usage",
        "--dataset",
        "file",
        "--dataset-path",
        str(prompts),
        "--output-len",
        "2",
    )
    assert code == 0
    assert result["summary"]["output_token_source"] == "tokenizer"
    assert [r["output_tokens"] for r in result["requests"]] == [4, 2]  # " ka" is one token


def test_bench_modules_import_neither_torch_nor_transformers():
    code = (
        "import sys, fleetserve.runtime.bench.main; "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert completed.returncode == 0, completed.stderr
