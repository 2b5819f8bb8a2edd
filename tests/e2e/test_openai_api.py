"""The official `openai` client against a real `fleetserve serve` process on the demo model.

Part 1 runs every example of SGLang's OpenAI API documents (/work/shared/reference/) unchanged; the
server is started with the model names those examples use (`--served-model-name`) and a 512-token
context, so examples without max_tokens stay short on CPU. Part 2 covers the edge cases the API
promises (streaming == non-streaming, exact usage, logprob formats, errors, auth, queue full,
disconnect -> abort, metrics). The demo model's weights are random: its text is noise, so tests
assert structure and consistency, never wording.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai import OpenAI
from serve_process import ServeProcess, start_server
from transformers import AutoTokenizer

from fleetserve.runtime.demo import default_demo_model_dir
from fleetserve.runtime.server.reasoning import REASONING_FORMATS, split_reasoning

pytestmark = pytest.mark.timeout(300)

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
QWEN25 = "qwen/qwen2.5-0.5b-instruct"
QWEN3 = "Qwen/Qwen3-4B"
KEY = "your-secret-key"
CONTEXT = 512


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServeProcess]:
    """The demo llama model, served under the reference examples' names (no --model-path: the default)."""
    log = tmp_path_factory.mktemp("serve") / "llama.log"
    proc = start_server(["--served-model-name", LLAMA, QWEN25, "base-model", "--context-length", str(CONTEXT),
                         "--kv-cache-memory-gb", "0.25", "--log-level", "warning"], log)
    yield proc
    assert proc.stop() in (0, 130), proc.log()
    assert "Traceback" not in proc.log(), proc.log()


@pytest.fixture(scope="module")
def qwen3_server(tmp_path_factory) -> Iterator[ServeProcess]:
    log = tmp_path_factory.mktemp("serve") / "qwen3.log"
    proc = start_server(["--model-path", str(default_demo_model_dir("qwen3")), "--reasoning-parser", "qwen3",
                         "--served-model-name", QWEN3, "deepseek-ai/DeepSeek-V3.1", "--context-length",
                         str(CONTEXT), "--kv-cache-memory-gb", "0.25", "--log-level", "warning"], log)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory) -> Iterator[ServeProcess]:
    """--api-key, --enable-cache-report and a queue of zero behind one running slot."""
    log = tmp_path_factory.mktemp("serve") / "guarded.log"
    proc = start_server(["--api-key", KEY, "--served-model-name", "guarded", "--enable-cache-report", "--max-running-requests", "1",
                         "--max-queued-requests", "0", "--context-length", str(CONTEXT),
                         "--kv-cache-memory-gb", "0.25", "--log-level", "warning"], log)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(server: ServeProcess) -> OpenAI:
    return openai.Client(base_url=server.base_url, api_key="EMPTY", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_demo_model_dir())


# --------------------------------------------------------------------------------------------------
# Part 1: the reference examples, unchanged (apart from `print` -> assertions on what they print)
# --------------------------------------------------------------------------------------------------


def assert_text_holds_the_tokens(text: str | None, completion_tokens: int, finish_reason: str | None,
                                  max_tokens: int, tokenizer) -> None:
    """The text is what the counted tokens decode to: a length finish generated exactly max_tokens, whose
    text is not empty and decodes from the vocabulary; a stop finish may have ended on an EOS that adds
    no text. (Re-encoding the text is no token count: random tokens decode to text that tokenizes
    differently.)"""
    assert isinstance(text, str) and 1 <= completion_tokens <= max_tokens
    assert finish_reason in ("stop", "length")
    if finish_reason == "length":
        assert completion_tokens == max_tokens and text
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_overview_basic_chat(client: OpenAI, tokenizer) -> None:
    response = client.chat.completions.create(
        model="meta-llama/Llama-3.1-8B-Instruct",
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"}
        ],
        temperature=0.8,
        max_tokens=128
    )
    choice = response.choices[0]
    assert_text_holds_the_tokens(choice.message.content, response.usage.completion_tokens, choice.finish_reason,
                                 128, tokenizer)
    assert response.object == "chat.completion" and response.id.startswith("chatcmpl-")
    assert response.model == LLAMA and response.choices[0].finish_reason in ("stop", "length")
    usage = response.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens and 0 < usage.completion_tokens <= 128


def test_overview_streaming(client: OpenAI) -> None:
    response = client.chat.completions.create(
        model="meta-llama/Llama-3.1-8B-Instruct",
        messages=[{"role": "user", "content": "Tell me a story"}],
        stream=True,
        temperature=0.8
    )
    pieces, finishes = [], []
    for chunk in response:
        if chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.choices[0].finish_reason:
            finishes.append(chunk.choices[0].finish_reason)
    assert pieces and len(finishes) == 1


def test_overview_json_schema_and_regex_are_accepted(client: OpenAI) -> None:
    response = client.chat.completions.create(
        model="meta-llama/Llama-3.1-8B-Instruct",
        messages=[{"role": "user", "content": "Generate user info"}],
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "user_info",
                "schema": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "age": {"type": "integer"},
                        "email": {"type": "string"}
                    },
                    "required": ["name", "age"]
                }
            }
        },
        max_tokens=8,  # the example's strings are unbounded; bounded schemas: test_structured_outputs.py
    )
    assert response.choices[0].finish_reason in ("stop", "length")
    assert response.choices[0].message.content.startswith('{"name": "')
    response = client.chat.completions.create(
        model="meta-llama/Llama-3.1-8B-Instruct",
        messages=[{"role": "user", "content": "Generate a phone number"}],
        extra_body={"regex": r"\d{3}-\d{3}-\d{4}"},
        max_tokens=32,
    )
    assert response.choices[0].finish_reason == "stop"
    assert re.fullmatch(r"\d{3}-\d{3}-\d{4}", response.choices[0].message.content)


def test_overview_cache_reporting(client: OpenAI) -> None:
    messages = [{"role": "user", "content": "Hello " * 40}]  # a few full KV pages to share
    cached = []
    for _ in range(2):
        response = client.chat.completions.create(
            model="meta-llama/Llama-3.1-8B-Instruct",
            messages=messages,
            extra_body={"return_cached_tokens_details": True},
            max_tokens=2,
        )
        assert response.usage.prompt_tokens_details
        cached.append(response.usage.prompt_tokens_details.cached_tokens)
    assert 0 < cached[1] < response.usage.prompt_tokens  # the repeat hits the prefix cache


def test_overview_text_completion(client: OpenAI, tokenizer) -> None:
    response = client.completions.create(
        model="meta-llama/Llama-3.1-8B-Instruct",
        prompt="Once upon a time",
        max_tokens=100,
        temperature=0.8
    )
    assert response.object == "text_completion"
    assert_text_holds_the_tokens(response.choices[0].text, response.usage.completion_tokens,
                                 response.choices[0].finish_reason, 100, tokenizer)


def test_overview_embeddings_are_refused_with_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(
            model="BAAI/bge-large-en-v1.5",
            input=["Hello, world!", "SGLang is fast"]
        )
    assert "does not support embeddings" in info.value.body["message"]


def test_overview_models(client: OpenAI) -> None:
    models = client.models.list()
    assert [model.id for model in models.data] == [LLAMA, QWEN25, "base-model"]
    model = client.models.retrieve("meta-llama/Llama-3.1-8B-Instruct")
    assert model.max_model_len == CONTEXT


def test_overview_health_and_server_info(server: ServeProcess) -> None:
    assert httpx.get(f"{server.url}/health").status_code == 200
    info = httpx.get(f"{server.url}/get_model_info").json()
    assert info["is_generation"] and info["max_model_len"] == CONTEXT and info["architecture"] == "LlamaForCausalLM"
    server_info = httpx.get(f"{server.url}/get_server_info").json()
    assert server_info["server_args"]["context_length"] == CONTEXT and "engine" in server_info


def test_overview_authentication(guarded_server: ServeProcess) -> None:
    body = {"model": "guarded", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 2}
    ok = httpx.post(f"{guarded_server.url}/v1/chat/completions", json=body,
                    headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert ok.status_code == 200
    client = openai.Client(base_url=guarded_server.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model="guarded", messages=body["messages"])
    assert info.value.status_code == 401 and info.value.body["object"] == "error"
    missing = httpx.get(f"{guarded_server.url}/v1/models")
    assert missing.status_code == 401 and missing.json()["code"] == 401
    for open_path in ("/health", "/metrics"):
        assert httpx.get(f"{guarded_server.url}{open_path}").status_code == 200


def test_overview_error_format(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "hi"}], temperature=-1)
    body = info.value.body
    assert set(body) == {"object", "message", "type", "param", "code"}
    assert body["object"] == "error" and body["code"] == 400 and body["param"] == "temperature"
    assert body["type"] == "invalid_request_error"


def test_overview_lora_adapters_are_404_until_lora_lands(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(
            model="base-model:adapter-name",  # Specify adapter with colon syntax
            messages=[{"role": "user", "content": "Hello"}]
        )
    assert "adapter-name" in info.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="base-model",
            messages=[{"role": "user", "content": "Hello"}],
            extra_body={"lora_path": "/path/to/adapter"}
        )
    for kwargs in ({"model": "qwen/qwen2.5-0.5b-instruct:adapter_a"},
                   {"model": "qwen/qwen2.5-0.5b-instruct", "extra_body": {"lora_path": "adapter_a"}}):
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(messages=[{"role": "user", "content": "Convert to SQL: show all users"}],
                                           max_tokens=50, **kwargs)


def test_chat_page_basic_and_multi_turn(client: OpenAI) -> None:
    response = client.chat.completions.create(
        model="meta-llama/Llama-3.1-8B-Instruct",
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        temperature=0,
        max_tokens=64,
    )
    assert response.choices[0].message.content is not None
    messages = [
        {"role": "system", "content": "You are a math tutor."},
        {"role": "user", "content": "What is calculus?"},
        {"role": "assistant", "content": "Calculus is the study of continuous change..."},
        {"role": "user", "content": "Can you give me an example?"},
    ]
    response = client.chat.completions.create(
        model="meta-llama/Llama-3.1-8B-Instruct",
        messages=messages,
        temperature=0.7,
        max_tokens=256,
    )
    assert response.usage.prompt_tokens > 20 and response.usage.completion_tokens <= 256


def test_completions_page_chat_and_parameters(client: OpenAI) -> None:
    response = client.chat.completions.create(
        model="qwen/qwen2.5-0.5b-instruct",
        messages=[
            {"role": "user", "content": "List 3 countries and their capitals."},
        ],
        temperature=0,
        max_tokens=64,
    )
    assert response.model == LLAMA  # the first served name is the one reported
    response = client.chat.completions.create(
        model="qwen/qwen2.5-0.5b-instruct",
        messages=[
            {
                "role": "system",
                "content": "You are a knowledgeable historian who provides concise responses.",
            },
            {"role": "user", "content": "Tell me about ancient Rome"},
            {
                "role": "assistant",
                "content": "Ancient Rome was a civilization centered in Italy.",
            },
            {"role": "user", "content": "What were their major achievements?"},
        ],
        temperature=0.3,  # Lower temperature for more focused responses
        max_tokens=128,  # Reasonable length for a concise response
        top_p=0.95,  # Slightly higher for better fluency
        presence_penalty=0.2,  # Mild penalty to avoid repetition
        frequency_penalty=0.2,  # Mild penalty for more natural language
        n=1,  # Single response is usually more stable
        seed=42,  # Keep for reproducibility
    )
    assert len(response.choices) == 1


def test_completions_page_logit_bias(client: OpenAI) -> None:
    response = client.chat.completions.create(
        model="qwen/qwen2.5-0.5b-instruct",
        messages=[
            {"role": "user", "content": "Complete this sentence: The weather today is"}
        ],
        temperature=0.7,
        max_tokens=20,
        logit_bias={
            "12345": 50,  # Increase likelihood of token ID 12345
            "67890": -50,  # Decrease likelihood of token ID 67890
            "11111": 25,  # Slightly increase likelihood of token ID 11111
        },
    )
    assert response.choices[0].message.content is not None
    response = client.completions.create(
        model="qwen/qwen2.5-0.5b-instruct",
        prompt="The best programming language for AI is",
        temperature=0.7,
        max_tokens=20,
        logit_bias={
            "12345": 75,  # Strongly favor token ID 12345
            "67890": -100,  # Completely avoid token ID 67890
            "11111": -25,  # Slightly discourage token ID 11111
        },
    )
    assert response.choices[0].text is not None


def test_logit_bias_steers_the_demo_model(client: OpenAI, tokenizer) -> None:
    token = tokenizer.encode(" Paris", add_special_tokens=False)[0]
    response = client.completions.create(model=LLAMA, prompt="The capital is", max_tokens=5, temperature=1.0,
                                         logit_bias={str(token): 100}, logprobs=0)
    assert response.choices[0].logprobs.tokens == [tokenizer.decode([token])] * 5


def test_completions_page_streaming_and_text(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="qwen/qwen2.5-0.5b-instruct",
        messages=[{"role": "user", "content": "Say this is a test"}],
        stream=True,
    )
    text = ""
    for chunk in stream:
        if chunk.choices[0].delta.content is not None:
            text += chunk.choices[0].delta.content
    assert text
    response = client.completions.create(
        model="qwen/qwen2.5-0.5b-instruct",
        prompt="List 3 countries and their capitals.",
        temperature=0,
        max_tokens=64,
        n=1,
        stop=None,
    )
    assert response.choices[0].finish_reason in ("stop", "length")
    response = client.completions.create(
        model="qwen/qwen2.5-0.5b-instruct",
        prompt="Write a short story about a space explorer.",
        temperature=0.7,  # Moderate temperature for creative writing
        max_tokens=150,  # Longer response for a story
        top_p=0.9,  # Balanced diversity in word choice
        stop=["\n\n", "THE END"],  # Multiple stop sequences
        presence_penalty=0.3,  # Encourage novel elements
        frequency_penalty=0.3,  # Reduce repetitive phrases
        n=1,  # Generate one completion
        seed=123,  # For reproducible results
    )
    assert "\n\n" not in response.choices[0].text and "THE END" not in response.choices[0].text


def test_reasoning_page_qwen3(qwen3_server: ServeProcess) -> None:
    from openai import OpenAI

    client = OpenAI(
        api_key="EMPTY",
        base_url=qwen3_server.base_url,
    )
    model = "Qwen/Qwen3-4B"
    messages = [{"role": "user", "content": "How many r's are in 'strawberry'?"}]
    response = client.chat.completions.create(
        model=model,
        messages=messages,
        extra_body={
            "chat_template_kwargs": {"enable_thinking": True},
            "separate_reasoning": True
        }
    )
    message = response.choices[0].message
    assert message.reasoning_content is None or isinstance(message.reasoning_content, str)
    assert isinstance(message.content, str)
    # the demo model never closes the <think> the template opened: all it wrote is reasoning
    text = (message.reasoning_content or "") + message.content
    assert response.usage.completion_tokens >= 1 and (text or response.choices[0].finish_reason == "stop")
    assert "<think>" not in text and "</think>" not in message.content
    response = client.chat.completions.create(
        model="deepseek-ai/DeepSeek-V3.1",
        messages=messages,
        extra_body={
            "chat_template_kwargs": {"thinking": True},
            "separate_reasoning": True
        },
        max_tokens=16,
    )
    assert response.choices[0].message.content is not None


# --------------------------------------------------------------------------------------------------
# Part 2: behaviour users rely on
# --------------------------------------------------------------------------------------------------


def test_reasoning_is_split_the_same_way_streamed_and_not(qwen3_server: ServeProcess) -> None:
    client = OpenAI(api_key="EMPTY", base_url=qwen3_server.base_url, max_retries=0)
    qwen_tokenizer = AutoTokenizer.from_pretrained(default_demo_model_dir("qwen3"))
    end = qwen_tokenizer.convert_tokens_to_ids("</think>")
    # The random demo model never opens <think> on its own. Prefill the answer with "<think>\n"
    # (continue_final_message), so the prompt opens the block, and bias </think> so that it closes
    # it somewhere in the middle; take the first seed that leaves both reasoning and content.
    messages = [{"role": "user", "content": "How many r's are in 'strawberry'?"},
                {"role": "assistant", "content": "<think>\n"}]
    common = {"model": QWEN3, "messages": messages, "max_tokens": 24, "temperature": 1.0,
              "logit_bias": {str(end): 20}}
    prefill = {"add_generation_prompt": False, "continue_final_message": True}
    for seed in range(20):
        raw_text = client.chat.completions.create(**common, seed=seed, extra_body={
            **prefill, "separate_reasoning": False}).choices[0].message.content
        before, _, after = raw_text.partition("</think>")
        if before.strip() and after.strip():
            break
    else:
        pytest.fail("no seed closed the think block mid-output")
    message = client.chat.completions.create(**common, seed=seed, extra_body=prefill).choices[0].message
    assert message.reasoning_content == before.strip()
    assert message.content == after.lstrip()
    assert (message.reasoning_content, message.content) == split_reasoning(
        REASONING_FORMATS["qwen3"], raw_text, prompt_opens_reasoning=True)
    reasoning, content = "", ""
    for chunk in client.chat.completions.create(**common, seed=seed, stream=True, extra_body=prefill):
        delta = chunk.choices[0].delta
        reasoning += getattr(delta, "reasoning_content", None) or ""
        content += delta.content or ""
    assert (reasoning, content) == (message.reasoning_content, message.content)
    off = client.chat.completions.create(**common, seed=seed, extra_body={
        **prefill, "chat_template_kwargs": {"enable_thinking": False}})
    assert off.choices[0].message.reasoning_content is None and "</think>" in off.choices[0].message.content


def _stream_texts(stream, n: int, key: str) -> tuple[list[str], list[list[str]], object]:
    texts, finishes, usage = [""] * n, [[] for _ in range(n)], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            piece = choice.delta.content if key == "chat" else choice.text
            texts[choice.index] += piece or ""
            if choice.finish_reason:
                finishes[choice.index].append(choice.finish_reason)
    return texts, finishes, usage


@pytest.mark.parametrize("n", [1, 3])
def test_streamed_text_equals_non_streamed_text_with_a_seed(client: OpenAI, n: int) -> None:
    chat = {"model": LLAMA, "messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": 24,
            "temperature": 0.9, "seed": 11, "n": n}
    full = client.chat.completions.create(**chat)
    texts, finishes, usage = _stream_texts(
        client.chat.completions.create(**chat, stream=True, stream_options={"include_usage": True}), n, "chat")
    assert texts == [c.message.content for c in full.choices]
    assert finishes == [[c.finish_reason] for c in full.choices]
    assert usage.model_dump() == full.usage.model_dump()
    completion = {"model": LLAMA, "prompt": "Once upon a time", "max_tokens": 24, "temperature": 0.9, "seed": 5, "n": n}
    full = client.completions.create(**completion)
    texts, finishes, _ = _stream_texts(client.completions.create(**completion, stream=True), n, "completion")
    assert texts == [c.text for c in full.choices]
    assert [c.index for c in full.choices] == list(range(n))


def test_seeds_repeat_and_differ(client: OpenAI) -> None:
    def sample(seed: int) -> str:
        return client.completions.create(model=LLAMA, prompt="Once upon a time", max_tokens=16, temperature=1.0,
                                         seed=seed).choices[0].text

    assert sample(1) == sample(1)
    assert len({sample(1), sample(2), sample(3)}) > 1


def test_usage_counts_are_exact(client: OpenAI, tokenizer) -> None:
    prompt = "Once upon a time"
    response = client.completions.create(model=LLAMA, prompt=prompt, max_tokens=7, temperature=0, logprobs=0,
                                         extra_body={"ignore_eos": True})
    usage = response.usage
    assert usage.prompt_tokens == len(tokenizer(prompt)["input_ids"])
    assert usage.completion_tokens == 7 == len(response.choices[0].logprobs.tokens)
    assert response.choices[0].finish_reason == "length"


def test_prompt_forms_token_ids_and_lists(client: OpenAI, tokenizer) -> None:
    ids = tokenizer("Once upon a time")["input_ids"]
    by_text = client.completions.create(model=LLAMA, prompt="Once upon a time", max_tokens=6, temperature=0)
    by_ids = client.completions.create(model=LLAMA, prompt=ids, max_tokens=6, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text
    many = client.completions.create(model=LLAMA, prompt=[ids, ids[:2]], max_tokens=3, temperature=0, n=2)
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    assert many.usage.prompt_tokens == len(ids) + 2 and many.usage.completion_tokens == 12
    texts = client.completions.create(model=LLAMA, prompt=["a b", "c d"], max_tokens=2, temperature=0)
    assert len(texts.choices) == 2


def test_echo_with_logprobs_in_completions_format(client: OpenAI, tokenizer) -> None:
    prompt = "Once upon a time"
    response = client.completions.create(model=LLAMA, prompt=prompt, max_tokens=4, temperature=0, echo=True,
                                         logprobs=2, extra_body={"ignore_eos": True})
    choice = response.choices[0]
    n_prompt = len(tokenizer(prompt)["input_ids"])
    lp = choice.logprobs
    assert choice.text.startswith(prompt)
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == n_prompt + 4
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(v <= 0 for v in lp.token_logprobs[1:]) and all(len(t) >= 1 for t in lp.top_logprobs[1:])
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0


def test_chat_logprobs_in_chat_format(client: OpenAI) -> None:
    response = client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "hi"}],
                                              max_tokens=5, temperature=0, logprobs=True, top_logprobs=3)
    content = response.choices[0].logprobs.content
    assert len(content) == response.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert bytes(entry.bytes).decode("utf-8", errors="replace") == entry.token
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[-1].logprob
    # greedy: the chosen token is the most likely one
    assert all(e.token == e.top_logprobs[0].token for e in content)


def test_stop_string_ends_the_text_before_it(client: OpenAI) -> None:
    base = {"model": LLAMA, "prompt": "Once upon a time", "max_tokens": 30, "temperature": 0,
            "extra_body": {"ignore_eos": True}}
    text = client.completions.create(**base).choices[0].text
    stop = text[10:14]
    assert stop.strip(), text
    stopped = client.completions.create(**base, stop=[stop]).choices[0]
    assert stopped.finish_reason == "stop" and stopped.text == text[: text.index(stop)]


def test_parameter_errors_are_400_with_the_numbers(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=LLAMA, prompt="hello " * 100, max_tokens=1000)
    message = info.value.body["message"]
    assert "1000" in message and str(CONTEXT) in message
    for bad in ({"top_p": 1.5}, {"n": 0}, {"top_logprobs": 21, "logprobs": True}):
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "hi"}], **bad)
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=LLAMA, prompt="a", suffix="b")
    assert "suffix" in info.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=LLAMA, messages=[{"role": "wizard", "content": "hi"}])
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["code"] == 404
    malformed = httpx.post(f"{client.base_url}chat/completions", content=b"{", headers={"content-type": "application/json"})
    assert malformed.status_code == 400 and malformed.json()["object"] == "error"


def _num_running(server: ServeProcess) -> int:
    return httpx.get(f"{server.url}/get_server_info").json()["engine"]["num_running"]


def _wait_idle(server: ServeProcess, within_s: float) -> float:
    start = time.monotonic()
    while _num_running(server) or httpx.get(f"{server.url}/get_server_info").json()["engine"]["num_waiting"]:
        assert time.monotonic() - start < within_s, "the engine still runs the abandoned request"
        time.sleep(0.05)
    return time.monotonic() - start


# 64 x 480 tokens: several seconds of work even for the tiny demo model, so going idle within
# ABORT_WITHIN_S can only mean the request was aborted.
LONG = {"model": LLAMA, "prompt": "x", "max_tokens": 480, "n": 64, "temperature": 1.0, "ignore_eos": True}
ABORT_WITHIN_S = 1.5


def _num_aborted(server: ServeProcess) -> float:
    lines = httpx.get(f"{server.url}/metrics").text.splitlines()
    found = [line for line in lines if line.startswith("fleetserve:request_success_total") and '"abort"' in line]
    return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


def test_streaming_client_disconnect_aborts(server: ServeProcess) -> None:
    aborted = _num_aborted(server)
    with httpx.stream("POST", f"{server.base_url}/completions", json={**LONG, "stream": True}, timeout=60) as r:
        lines = r.iter_lines()
        for _ in range(5):
            next(lines)
        assert _num_running(server) > 0
    _wait_idle(server, within_s=ABORT_WITHIN_S)
    assert _num_aborted(server) == aborted + 1


def test_non_streaming_client_disconnect_aborts(server: ServeProcess) -> None:
    aborted = _num_aborted(server)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/completions", json=LONG, timeout=1.0)
    _wait_idle(server, within_s=ABORT_WITHIN_S)
    assert _num_aborted(server) == aborted + 1


def test_queue_full_is_503(guarded_server: ServeProcess) -> None:
    client = openai.Client(base_url=guarded_server.base_url, api_key=KEY, max_retries=0)
    started = threading.Event()

    def long_request() -> None:
        stream = client.completions.create(model="guarded", prompt="x", max_tokens=400, stream=True,
                                           extra_body={"ignore_eos": True})
        for _ in stream:
            started.set()

    worker = threading.Thread(target=long_request)
    worker.start()
    assert started.wait(30)
    with pytest.raises(openai.APIStatusError) as info:
        client.completions.create(model="guarded", prompt="y", max_tokens=2)
    assert info.value.status_code == 503 and "queue full" in info.value.body["message"]
    worker.join()
    assert client.completions.create(model="guarded", prompt="y", max_tokens=2).usage.prompt_tokens_details


def test_ops_endpoints_and_metrics(server: ServeProcess, client: OpenAI) -> None:
    client.completions.create(model=LLAMA, prompt="metrics", max_tokens=3)
    assert httpx.get(f"{server.url}/health_generate", timeout=30).status_code == 200
    metrics = httpx.get(f"{server.url}/metrics").text
    for name in ("fleetserve:num_requests_running", "fleetserve:num_requests_waiting", "fleetserve:kv_cache_usage_perc",
                 "fleetserve:prefix_cache_queries_total", "fleetserve:prefix_cache_hits_total",
                 "fleetserve:num_preemptions_total", "fleetserve:prompt_tokens_total",
                 "fleetserve:generation_tokens_total", "fleetserve:prompt_tokens_cached_total",
                 "fleetserve:time_to_first_token_seconds_bucket", "fleetserve:inter_token_latency_seconds_bucket",
                 "fleetserve:e2e_request_latency_seconds_bucket", "fleetserve:request_queue_time_seconds_bucket",
                 'fleetserve:request_success_total{finished_reason="length"'):
        assert name in metrics, name
    _wait_idle(server, within_s=5.0)
    flushed = httpx.post(f"{server.url}/flush_cache")
    assert flushed.status_code == 200 and flushed.json()["success"]


def test_openapi_document_has_no_422(server: ServeProcess) -> None:
    document = httpx.get(f"{server.url}/openapi.json").json()
    assert "422" not in json.dumps(document["paths"])
