"""The engine: add requests, step, read outputs. One thread drives it; no asyncio, no HTTP.

    engine = LLMEngine.from_config(EngineConfig(model_path=...))
    engine.add_request("r1", prompt_token_ids, SamplingParams(max_tokens=32))
    while engine.has_unfinished_requests():
        for out in engine.step(): ...

A step is schedule → run the model → sample → post-process (append, detokenize, stop checks).
Sampling and post-processing are per request: when they raise for one request, that request alone
ends (`take_failures()` names it and why) and the step goes on for the others; a model forward that
raises is not attributable and propagates.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait

import torch

from fleetserve.runtime.engine.config import EngineConfig, ModelConfig
from fleetserve.runtime.engine.detokenizer import IncrementalDetokenizer
from fleetserve.runtime.engine.grammar_compiler import GrammarCompilerCache, grammar_spec
from fleetserve.runtime.engine.grammar_matcher import GrammarMaskBuilder, SequenceGrammar
from fleetserve.runtime.engine.logprobs import prompt_logprobs
from fleetserve.runtime.engine.lora.adapter import (
    AdapterError,
    AdapterFiles,
    AdapterNotFoundError,
    LoRAAdapter,
)
from fleetserve.runtime.engine.lora.manager import LoRAManager
from fleetserve.runtime.engine.model_runner import ModelRunner, StepLogits
from fleetserve.runtime.engine.outputs import collect_outputs, finish
from fleetserve.runtime.engine.page_pool import PagePool
from fleetserve.runtime.engine.sampler import SamplingRow, sample
from fleetserve.runtime.engine.scheduler import ScheduledSequence, Scheduler
from fleetserve.runtime.engine.sequence import Request, Sequence
from fleetserve.runtime.engine.types import EngineError, EngineStats, RequestOutput, SamplingParams

logger = logging.getLogger(__name__)

GRAMMAR_WAIT_S = 0.01  # an idle step waits this long for a grammar to finish compiling


class LLMEngine:
    def __init__(self, model_config: ModelConfig, config: EngineConfig, tokenizer, runner: ModelRunner,
                 pool: PagePool):
        self.model_config = model_config
        self.config = config
        self.tokenizer = tokenizer
        self.runner = runner
        self.pool = pool
        config.validate()
        budget = config.max_num_batched_tokens or max(model_config.max_model_len, config.max_running_requests)
        if config.max_running_requests > budget:
            logger.info("max_running_requests %d is above the step budget %d: at most %d run at once, so "
                        "each can decode in every step", config.max_running_requests, budget, budget)
        self.scheduler = Scheduler(pool, budget, config.max_running_requests, config.max_prefill_tokens_with_decodes)
        self.requests: dict[str, Request] = {}
        self._aborted: list[Request] = []
        self._failures: list[tuple[str, str]] = []  # (request id, reason) of requests ended by a fault
        self.num_scheduled_last_step = 0
        self.lora: LoRAManager | None = getattr(runner, "lora", None)  # None unless LoRA is enabled
        if self.lora is not None:
            self.scheduler.lora_fits = self.lora.fits
        self.grammars = GrammarCompilerCache(tokenizer, model_config.vocab_size, model_config.eos_token_ids)
        self._compiling: dict[str, Future] = {}  # request id -> its grammar, compiling off the loop
        self.grammar_masks = GrammarMaskBuilder(model_config.vocab_size)

    @classmethod
    def from_config(cls, config: EngineConfig) -> LLMEngine:
        from fleetserve.runtime.engine.factory import build_engine

        return build_engine(config)

    # -- requests --------------------------------------------------------------------------------

    def check_request(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        """Raises EngineError when the request can never run (the server answers 400)."""
        n_prompt, limit = len(prompt_token_ids), self.model_config.max_model_len
        if n_prompt == 0:
            raise EngineError("the prompt is empty")
        if n_prompt + params.max_tokens > limit:
            raise EngineError(
                f"this model's maximum context length is {limit} tokens; the prompt has {n_prompt} tokens "
                f"and max_tokens is {params.max_tokens} ({n_prompt + params.max_tokens} in all)"
            )
        bad = [t for t in prompt_token_ids if not 0 <= t < self.model_config.vocab_size]
        if bad:
            raise EngineError(f"prompt token id {bad[0]} is outside the vocabulary (size {self.model_config.vocab_size})")
        pages = -(-(n_prompt + params.max_tokens) // self.pool.page_size)
        if pages > self.pool.num_pages:
            raise EngineError(
                f"prompt + max_tokens ({n_prompt + params.max_tokens} tokens) needs {pages} KV pages; "
                f"the cache has {self.pool.num_pages}"
            )

    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams,
                    lora_name: str | None = None) -> None:
        if request_id in self.requests:
            raise EngineError(f"request id {request_id!r} is already in use")
        self.check_request(prompt_token_ids, params)
        spec = grammar_spec(params)
        grammar = self.grammars.submit(spec) if spec is not None else None
        if grammar is not None and grammar.done() and grammar.exception() is not None:
            raise grammar.exception()  # an EngineError with xgrammar's reason
        request = Request(request_id, list(prompt_token_ids), params, lora=self.find_adapter(lora_name))
        if params.prompt_logprobs is not None:
            request.prompt_logprobs = [None]
        for index in range(params.n):  # built in full before anything is queued: a failure leaves no trace
            detok = IncrementalDetokenizer(
                self.tokenizer, request.prompt_token_ids, skip_special_tokens=params.skip_special_tokens,
                stop=params.stop, include_stop_str_in_output=params.include_stop_str_in_output,
            )
            request.sequences.append(Sequence(request, index, detok, list(prompt_token_ids)))
        for seq in request.sequences:
            self.scheduler.add(seq)
        self.requests[request_id] = request
        if grammar is not None:
            request.is_grammar_pending = True  # the scheduler skips it until _start_grammars
            self._compiling[request_id] = grammar

    def abort_request(self, request_id: str) -> None:
        """Frees the request's pages now; its final output (finish_reason "abort") comes with the next step."""
        request = self.requests.pop(request_id, None)
        if request is None:
            return
        self._compiling.pop(request_id, None)
        for seq in request.sequences:
            if seq.status != "finished":
                self.scheduler.remove(seq)
                finish(seq, "abort")
        self._aborted.append(request)

    def abort_all(self) -> list[str]:
        """Aborts every request and drops their final outputs; returns their ids."""
        ids = list(self.requests)
        for request_id in ids:
            self.abort_request(request_id)
        self._aborted = []
        return ids

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests) or bool(self._aborted)

    def take_failures(self) -> list[tuple[str, str]]:
        """(request id, reason) of the requests a fault ended since the last call; they get no final output."""
        failures, self._failures = self._failures, []
        return failures

    def _fail_request(self, request_id: str, exc: Exception) -> None:
        logger.error("request %s failed in the engine and was ended: %r", request_id, exc,
                     exc_info=(type(exc), exc, exc.__traceback__))
        request = self.requests.get(request_id)
        if request is not None:
            self.abort_request(request_id)
            self._aborted = [r for r in self._aborted if r is not request]
            self._failures.append((request_id, f"the engine failed on this request: {exc!r}"))

    # -- the step --------------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        touched: dict[str, Request] = {r.request_id: r for r in self._aborted}
        self._aborted = []
        self._start_grammars()
        batch = self.scheduler.schedule().scheduled
        self.num_scheduled_last_step = len(batch)
        if batch:
            now = time.monotonic()
            for item in batch:
                req = item.seq.request
                if req.first_scheduled_time is None:
                    req.first_scheduled_time = now
            step_logits = self.runner.execute(batch)
            faults: dict[str, Exception] = {}  # request id -> what it raised
            self._per_request(self._record_prompt_logprobs, batch, step_logits, faults)
            sampled = self._per_request(self._sample, batch, step_logits, faults)
            self.scheduler.finish_step(batch)
            for seq, (token, logprob) in sampled.items():
                try:
                    self._append(seq, token, logprob)
                except Exception as exc:  # detokenizer, grammar matcher, stop check: this request's own
                    faults.setdefault(seq.request.request_id, exc)
            for request_id, exc in faults.items():
                self._fail_request(request_id, exc)
            touched.update((item.seq.request.request_id, item.seq.request) for item in batch
                           if item.seq.request.request_id not in faults)
        elif self._compiling:  # nothing to run until a grammar is ready: do not spin
            wait(list(self._compiling.values()), timeout=GRAMMAR_WAIT_S, return_when=FIRST_COMPLETED)
        outputs = collect_outputs(touched.values())
        for out in outputs:
            if out.finished:
                self.requests.pop(out.request_id, None)
        return outputs

    @staticmethod
    def _per_request(fn, batch: list[ScheduledSequence], step: StepLogits, faults: dict[str, Exception]) -> dict:
        """fn(batch, step) for the whole batch; when that raises, fn for each sequence alone, so the request
        that raises is found (recorded in faults) and the others still get their result. Only on a fault."""
        try:
            return fn(batch, step) or {}
        except Exception:
            logger.warning("%s raised for the batch; retrying it sequence by sequence", fn.__name__)
        merged: dict = {}
        for item, where in zip(batch, step.rows, strict=True):
            if item.seq.request.request_id in faults:
                continue
            try:
                merged.update(fn([item], StepLogits(step.logits, [where])) or {})
            except Exception as exc:
                faults[item.seq.request.request_id] = exc
        return merged

    def _start_grammars(self) -> None:
        """Requests whose grammar has compiled become schedulable, each sequence with its own matcher."""
        for request_id, future in list(self._compiling.items()):
            if not future.done():
                continue
            del self._compiling[request_id]
            request = self.requests[request_id]
            request.is_grammar_pending = False
            try:
                compiled = future.result()
            except EngineError as exc:  # only direct engine users get here: the server compiles first
                logger.warning("request %s aborted: %s", request_id, exc)
                self.abort_request(request_id)
                continue
            for seq in request.sequences:
                seq.grammar = SequenceGrammar(compiled, self.model_config.vocab_size)

    def _sample(self, batch: list[ScheduledSequence], step: StepLogits) -> dict[Sequence, tuple]:
        rows, row_index = [], []
        for item, where in zip(batch, step.rows, strict=True):
            if item.samples:
                seq = item.seq
                rows.append(SamplingRow(seq.request.params, seq.token_ids, seq.request.num_prompt_tokens,
                                        seed_offset=seq.index))
                row_index.append(where.first + where.num_rows - 1)
        if not rows:
            return {}
        logits = step.logits[torch.tensor(row_index, device=step.logits.device)]
        seqs = [item.seq for item in batch if item.samples]
        allowed = self.grammar_masks.build([seq.grammar for seq in seqs], logits.device)
        result = sample(logits, rows, eos_token_ids=self.model_config.eos_token_ids, allowed_mask=allowed)
        return {seq: (tok, lp) for seq, tok, lp in zip(seqs, result.token_ids, result.logprobs, strict=True)}

    def _record_prompt_logprobs(self, batch: list[ScheduledSequence], step: StepLogits) -> None:
        for item, where in zip(batch, step.rows, strict=True):
            seq = item.seq
            if not seq.wants_prompt_logprobs or where.num_rows == 0:
                continue
            req = seq.request
            assert req.prompt_logprobs is not None
            start = seq.num_computed_tokens
            # position t predicts token t + 1; keep only targets inside the prompt not yet recorded
            targets = range(max(start + 1, len(req.prompt_logprobs)), min(start + item.num_new_tokens, req.num_prompt_tokens - 1) + 1)
            if not targets:
                continue
            first_row = where.first + targets[0] - 1 - start
            logits = step.logits[first_row : first_row + len(targets)]
            k = req.params.prompt_logprobs or 0
            req.prompt_logprobs.extend(prompt_logprobs(logits, req.prompt_token_ids[targets[0] : targets[-1] + 1], k))

    def _append(self, seq: Sequence, token: int, logprob) -> None:
        params = seq.request.params
        seq.token_ids.append(token)
        seq.new_token_ids.append(token)
        if logprob is not None:
            seq.new_logprobs.append(logprob)
        if token in params.stop_token_ids:
            seq.new_text += seq.detokenizer.flush()
            return self._finish(seq, "stop", token)
        if token in self.model_config.eos_token_ids and not params.ignore_eos:
            seq.new_text += seq.detokenizer.flush()
            return self._finish(seq, "stop", None)
        if seq.grammar is not None:
            seq.grammar.accept(token)
        delta = seq.detokenizer.add_tokens([token])
        seq.new_text += delta.text
        if delta.stop_str is not None:
            return self._finish(seq, "stop", delta.stop_str)
        if seq.grammar is not None and seq.grammar.is_finished:  # complete: end without sampling EOS
            seq.new_text += seq.detokenizer.flush()
            return self._finish(seq, "stop", None)
        if seq.num_output_tokens >= params.max_tokens or seq.num_tokens >= self.model_config.max_model_len:
            seq.new_text += seq.detokenizer.flush()
            return self._finish(seq, "length", None)
        return None

    def _finish(self, seq: Sequence, reason, stop_reason: str | int | None) -> None:
        self.scheduler.remove(seq)
        finish(seq, reason, stop_reason)

    # -- operations --------------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Runs one full-budget prefill step and a few decode steps on dummy prompts, then forgets them.

        First calls are slow: oneDNN builds a kernel per GEMM shape, SDPA and the allocator grow their
        buffers. On the large demo model the first 2048-token step took 1.5 s against 0.2 s warm, and the
        first requests a server answered carried it in their TTFT. Leaves no cached pages and zeroes the
        prefix-cache and preemption counters; call it before serving (it needs an idle engine).
        """
        if self.requests:
            raise EngineError("warm_up needs an idle engine")
        ps = self.pool.page_size
        num_seqs = max(1, min(8, self.scheduler.max_running))
        new_tokens = 4
        per_seq = min(self.scheduler.max_num_batched_tokens // num_seqs,
                      self.model_config.max_model_len - new_tokens,
                      self.pool.num_pages // num_seqs * ps - new_tokens)
        if per_seq < 1:
            return
        vocab = self.model_config.vocab_size
        params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
        for i in range(num_seqs):
            prompt = [(7919 * (i * per_seq + j) + 13) % vocab for j in range(per_seq)]
            self.add_request(f"__warmup-{i}", prompt, params)
        while self.has_unfinished_requests():
            self.step()
        self.reset_prefix_cache()
        self.pool.num_queries = self.pool.num_hits = 0
        self.scheduler.num_preemptions = 0

    # -- LoRA adapters (docs/lora.md) --------------------------------------------------------------

    def find_adapter(self, ref: str | None) -> LoRAAdapter | None:
        """The loaded adapter a request names (by name, or by the path it was loaded from); None: base model."""
        if not ref:
            return None
        adapter = self.lora.find(ref) if self.lora is not None else None
        if adapter is None:
            loaded = ", ".join(self.loaded_adapters()) or "none"
            raise AdapterNotFoundError(f"the LoRA adapter '{ref}' is not loaded (loaded: {loaded})")
        return adapter

    def load_lora(self, name: str, path: str, pinned: bool = False) -> None:
        """Reads and loads a PEFT adapter under `name` (a reload replaces it); AdapterError says why not."""
        self.add_lora(name, self._lora().read(path), pinned)

    def add_lora(self, name: str, files: AdapterFiles, pinned: bool = False) -> None:
        """Loads adapter files already read (`LoRAManager.read`, off this thread). Requests running on a
        previous load of `name` finish on it; new ones get the new weights and never its cached prefixes."""
        old = self._lora().add(name, files, pinned)
        if old is not None:
            self.pool.drop_cached(old.key)

    def unload_lora(self, name: str) -> None:
        """Unloads adapter `name`: new requests for it are refused, those in flight finish on it."""
        adapter = self._lora().remove(name)
        self.pool.drop_cached(adapter.key)

    def loaded_adapters(self) -> list[str]:
        return [] if self.lora is None else self.lora.names

    def _lora(self) -> LoRAManager:
        if self.lora is None:
            raise AdapterError("LoRA is not enabled on this server (start it with --enable-lora)")
        return self.lora

    def reset_prefix_cache(self) -> bool:
        if self.requests:
            return False
        self.pool.reset_prefix_cache()
        return True

    def stats(self) -> EngineStats:
        """Counts are requests (a request with n choices counts once): running when any of its sequences
        is in the batch, waiting otherwise."""
        num_running = len({seq.request.request_id for seq in self.scheduler.running})
        return EngineStats(
            num_running=num_running,
            num_waiting=max(0, len(self.requests) - num_running),  # read from another thread: never negative
            num_total_pages=self.pool.num_pages,
            num_used_pages=self.pool.num_used,
            page_size=self.pool.page_size,
            prefix_cache_queries=self.pool.num_queries,
            prefix_cache_hits=self.pool.num_hits,
            num_preemptions=self.scheduler.num_preemptions,
            **self._lora_stats(),
        )

    def _lora_stats(self) -> dict:
        """Requests per adapter, running (any sequence in the batch) or waiting, and the loaded adapters."""
        if self.lora is None:
            return {}
        running: dict[str, int] = {}
        waiting: dict[str, int] = {}
        for request in list(self.requests.values()):  # read from the server's thread: copy first
            if request.lora is not None:
                into = running if any(s.status == "running" for s in request.sequences) else waiting
                into[request.lora.name] = into.get(request.lora.name, 0) + 1
        return {"lora_running": running, "lora_waiting": waiting, "loaded_adapters": self.lora.names,
                "max_loras": self.lora.settings.max_loras_per_batch}
