"""`FakeEngine`: a TEST DOUBLE of `AsyncEngine` for the server's HTTP edge cases only.

It implements the engine interface the server uses (check_request, generate, abort, stats,
flush_cache, tokenizer, model_config, health, the LoRA calls of a server without --enable-lora,
cache_state) over a tiny byte-level tokenizer, and replies with a scripted
text token by token. It runs no model: the real engine is exercised by tests/e2e/.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from fleetserve.runtime.engine.cache_events import CacheEventLog, CacheState
from fleetserve.runtime.engine.lora.adapter import AdapterError
from fleetserve.runtime.engine.types import (
    CompletionOutput,
    EngineError,
    EngineHealth,
    EngineStats,
    RequestOutput,
    SamplingParams,
    TokenLogprob,
)

CHATML_TEMPLATE = (
    "{%- for m in messages -%}"
    "{%- if m.role == 'system' and not loop.first -%}{{ raise_exception('a system message must come first') }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + m.role + '\\n' + (m.content or '') + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}{{ '<think>\\n\\n</think>\\n\\n' }}{%- endif -%}"
    "{%- endif -%}"
)


def build_test_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer (one token per byte) with ChatML and <think> tokens; ids 0..255 are bytes."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet(), key=lambda ch: ord(ch))
    raw = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.add_special_tokens([AddedToken(t, normalized=False) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")])
    raw.add_tokens([AddedToken(t, normalized=False) for t in ("<think>", "</think>")])
    return PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>", chat_template=CHATML_TEMPLATE)


@dataclass
class FakeEngine:
    """Replies `reply` (sequence i of n gets `reply` + ` #i` when n > 1), one token per step."""

    reply: str = "Hello there, friend."
    max_model_len: int = 512
    token_delay_s: float = 0.0
    num_waiting: int = 0
    num_cached_tokens: int = 0
    tokenizer: PreTrainedTokenizerFast = field(default_factory=build_test_tokenizer)
    requests: list[tuple[str, list[int], SamplingParams]] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    active: set[str] = field(default_factory=set)
    started: bool = False
    health_status: EngineHealth = field(default_factory=lambda: EngineHealth(True, True, None))
    cache_events: CacheEventLog = field(default_factory=CacheEventLog)

    def __post_init__(self) -> None:
        self.eos_id = self.tokenizer.convert_tokens_to_ids("<|endoftext|>")
        self.model_config = SimpleNamespace(
            max_model_len=self.max_model_len, vocab_size=len(self.tokenizer), eos_token_ids={self.eos_id},
            architecture="FakeForCausalLM", dtype="torch.float32", model_path="fake")

    async def start(self) -> None:
        self.started = True

    async def shutdown(self) -> None:
        self.started = False

    def check_request(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        total = len(prompt_token_ids) + params.max_tokens
        if total > self.max_model_len:
            raise EngineError(f"prompt ({len(prompt_token_ids)} tokens) + max_tokens ({params.max_tokens}) = "
                              f"{total} exceeds the context length ({self.max_model_len})")

    async def check_grammar(self, params: SamplingParams) -> None:
        """The real engine compiles the constraint with xgrammar; the fake accepts any."""

    def _reply_ids(self, index: int, n: int) -> list[int]:
        text = self.reply if n == 1 else f"{self.reply} #{index}"
        return [*self.tokenizer(text, add_special_tokens=False)["input_ids"], self.eos_id]

    def _logprob(self, token_id: int, k: int) -> TokenLogprob:
        top = [(token_id, -0.25)] + [((token_id + j) % 256, -1.0 - j) for j in range(1, k)]
        return TokenLogprob(token_id, -0.25, top[:k])

    def _prompt_logprobs(self, prompt: list[int], k: int) -> list[TokenLogprob | None]:
        return [None] + [self._logprob(t, k) for t in prompt[1:]]

    async def generate(self, request_id: str, prompt_token_ids: list[int],
                       params: SamplingParams) -> AsyncIterator[RequestOutput]:
        self.requests.append((request_id, list(prompt_token_ids), params))
        self.active.add(request_id)
        replies = [self._reply_ids(i, params.n) for i in range(params.n)]
        done = [False] * params.n
        step = 0
        try:
            while not all(done):
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                else:
                    await asyncio.sleep(0)
                outputs = [self._step(replies[i], i, step, params) for i in range(params.n) if not done[i]]
                for o in outputs:
                    done[o.index] = o.finished
                first = step == 0
                yield RequestOutput(
                    request_id, outputs, len(prompt_token_ids), self.num_cached_tokens,
                    prompt_logprobs=self._prompt_logprobs(prompt_token_ids, params.prompt_logprobs)
                    if first and params.prompt_logprobs is not None else None,
                    finished=all(done), queue_time=0.001 if first else None)
                step += 1
        finally:
            if not all(done):
                self.aborted.append(request_id)
            self.active.discard(request_id)

    def _step(self, reply: list[int], index: int, step: int, params: SamplingParams) -> CompletionOutput:
        token = reply[step % len(reply)]
        is_eos = token == self.eos_id and not params.ignore_eos
        text = "" if is_eos else self.tokenizer.decode([token])
        logprobs = [self._logprob(token, params.logprobs)] if params.logprobs is not None else None
        finish = "stop" if is_eos else ("length" if step + 1 >= params.max_tokens else None)
        return CompletionOutput(index, [token], text, logprobs, finish,
                                self.eos_id if is_eos else None)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    def stats(self) -> EngineStats:
        return EngineStats(num_running=len(self.active), num_waiting=self.num_waiting, num_total_pages=64,
                           num_used_pages=2 * len(self.active), page_size=16, prefix_cache_queries=10,
                           prefix_cache_hits=4, num_preemptions=0)

    async def flush_cache(self) -> bool:
        return not self.active

    def health(self) -> EngineHealth:
        return self.health_status

    # LoRA and the prefix-cache feed, as a real engine started without --enable-lora answers them.

    async def load_lora_adapter(self, name: str, path: str, pinned: bool = False) -> None:
        raise AdapterError("LoRA is not enabled on this server (start it with --enable-lora)")

    async def unload_lora_adapter(self, name: str) -> None:
        raise AdapterError("LoRA is not enabled on this server (start it with --enable-lora)")

    def loaded_adapters(self) -> list[str]:
        return []

    def lora_adapters(self) -> dict[str, str]:
        return {}

    def find_adapter(self, ref: str) -> str | None:
        return None

    def cache_state(self, epoch: str | None, after: int | None) -> CacheState:
        return self.cache_events.read(epoch, after)
