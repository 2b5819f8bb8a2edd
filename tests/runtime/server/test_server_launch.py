"""`fleetserve serve` flags -> EngineConfig and ServerSettings; --chat-template loading."""

from __future__ import annotations

import pytest

from fleetserve.runtime.server.chat_template import load_chat_template
from fleetserve.runtime.server.launch import build_parser, check_args, engine_config, server_settings
from fleetserve.runtime.server.serving_lora import read_adapters_file


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


def test_defaults_follow_sglang() -> None:
    args = parse()
    assert args.port == 30000 and args.host == "127.0.0.1" and args.model_path is None
    settings = server_settings(args, "/models/demo")
    assert settings.served_model_names == ["/models/demo"] and settings.api_key is None
    assert not settings.enable_cache_report and settings.max_queued_requests is None


def test_engine_flags_reach_the_engine_config() -> None:
    args = parse("--dtype", "bfloat16", "--device", "cpu", "--page-size", "32", "--chunked-prefill-size", "512",
                 "--max-running-requests", "8", "--context-length", "1024", "--kv-cache-memory-gb", "1.5",
                 "--disable-radix-cache", "--attention-backend", "torch")
    config = engine_config(args, "/m")
    assert (config.model_path, config.dtype, config.device, config.page_size) == ("/m", "bfloat16", "cpu", 32)
    assert config.max_num_batched_tokens == 512 and config.max_running_requests == 8
    assert config.context_length == 1024 and config.kv_cache_memory_gb == 1.5
    assert not config.enable_prefix_caching and config.attention_backend == "torch"


def test_server_flags_reach_the_settings(monkeypatch) -> None:
    monkeypatch.setenv("FLEETSERVE_API_KEY", "from-env")
    args = parse("--served-model-name", "a", "b", "--enable-cache-report", "--reasoning-parser", "qwen3",
                 "--max-queued-requests", "4", "--chat-template", "{{ messages[0].content }}")
    settings = server_settings(args, "/m")
    assert settings.api_key == "from-env" and settings.served_model_names == ["a", "b"]
    assert settings.model_name == "a" and settings.enable_cache_report and settings.reasoning_parser == "qwen3"
    assert settings.max_queued_requests == 4 and settings.chat_template == "{{ messages[0].content }}"
    assert "api_key" not in settings.server_args and settings.server_args["api_key_set"]


def test_lora_flags_are_accepted() -> None:
    args = parse("--enable-lora", "--lora-paths", "a=/x", "b=/y", "--max-loras-per-batch", "2", "--max-lora-rank", "16")
    assert args.lora_paths == ["a=/x", "b=/y"] and args.max_lora_rank == 16


def test_chat_template_from_a_file_or_inline(tmp_path) -> None:
    path = tmp_path / "t.jinja"
    path.write_text("{{ 'x' }}")
    assert load_chat_template(str(path)) == "{{ 'x' }}"
    assert load_chat_template("{% for m in messages %}{% endfor %}").startswith("{%")
    assert load_chat_template(None) is None
    with pytest.raises(ValueError, match="neither a file nor a Jinja template"):
        load_chat_template("/no/such/file.jinja")


def test_custom_chat_template_is_used(make_client, engine) -> None:
    client = make_client(chat_template="{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}>")
    body = {"messages": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": [
        {"type": "text", "text": "one"}, {"type": "text", "text": "two"}]}], "max_tokens": 1}
    assert client.post("/v1/chat/completions", json=body).status_code == 200
    assert engine.tokenizer.decode(engine.requests[-1][1]) == "[system]be brief[user]one\ntwo>"


def test_a_model_that_cannot_load_exits_1_with_a_message_not_a_traceback(tmp_path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "not-a-model"
    bad.mkdir()
    result = subprocess.run([sys.executable, "-P", "-m", "fleetserve.runtime.cli", "serve", "--model-path", str(bad)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "fleetserve serve: error:" in result.stderr and "Traceback" not in result.stderr


def test_lora_paths_file_implies_lora_and_reaches_the_settings(tmp_path) -> None:
    listed = tmp_path / "adapters.json"
    listed.write_text('[{"lora_name": "sql", "lora_path": "org/sql-lora"}, {"lora_name": "chat", '
                      '"lora_path": "/mnt/adapters/c/chat", "pinned": true}]')
    args = parse("--lora-paths-file", str(listed))
    check_args(build_parser(), args)
    assert engine_config(args, "/m").enable_lora and server_settings(args, "/m").lora_paths_file == str(listed)
    check_args(build_parser(), parse("--lora-paths-file", str(tmp_path / "absent.json")))  # absent: none

    for text, reason in [("{not json", "not a JSON list"), ('{"lora_name": "a"}', "not a JSON list"),
                         ('[{"lora_name": "a"}]', "lora_path"),
                         ('[{"lora_name": "a", "lora_path": "x"}, {"lora_name": "a", "lora_path": "y"}]',
                          "appears twice")]:
        listed.write_text(text)
        parser = build_parser()
        with pytest.raises(SystemExit):
            check_args(parser, parse("--lora-paths-file", str(listed)))
        with pytest.raises(ValueError, match=reason):
            read_adapters_file(listed)
