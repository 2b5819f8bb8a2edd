"""Compiling structured-output constraints with xgrammar, off the step loop, cached by (kind, text).

A request's constraint (``SamplingParams.json_schema`` / ``json_object`` / ``regex`` / ``ebnf``) becomes
a ``GrammarSpec``. ``GrammarCompilerCache.submit`` returns a ``Future`` of the compiled grammar: the
work runs on a small thread pool, so neither the step loop nor the server's event loop waits for it,
and every later request with the same spec shares the same future (an LRU of recent specs). A spec
that does not compile resolves to an ``EngineError`` carrying xgrammar's reason, fit for a 400.

JSON grammars are compiled with ``any_whitespace=False``: xgrammar's fixed separators (``", "`` and
``": "``) and no other whitespace, so a model cannot loop in spaces until ``max_tokens``. Schemas use
xgrammar's ``strict_mode``: objects take no properties and arrays no items beyond those the schema
declares unless it allows them explicitly.

JSON grammars also come with a token filter that bans every token holding a control character
(U+0000–U+001F): compact JSON never contains one raw, but xgrammar 0.2.8's rule for strings with
``minLength``/``maxLength`` (``[^"\\\r\n]``) lets them through, and the result would not parse.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Collection
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Literal, NamedTuple

import torch
import xgrammar as xgr

from fleetserve.runtime.engine.types import EngineError, SamplingParams

logger = logging.getLogger(__name__)

GrammarKind = Literal["json_schema", "json_object", "regex", "ebnf"]

COMPILE_WORKERS = 1  # requests compiling at once; each compile may use XGRAMMAR_THREADS more
XGRAMMAR_THREADS = 2
CACHE_SIZE = 512  # distinct specs whose compiled grammar (or error) is kept
BITS_PER_WORD = 32  # xgrammar's bitmask: int32 words, bit j of word i allows token 32 * i + j
JSON_OBJECT_SCHEMA = '{"type": "object"}'
# xgrammar prefixes its messages with "[time] file.cc:line: " and sometimes a failed CHECK.
_XGRAMMAR_PREFIX = re.compile(r"^\s*\[[0-9:]+\]\s+\S+:\d+:\s*(Check failed: \(.*?\) is false:\s*)?")


class GrammarSpec(NamedTuple):
    kind: GrammarKind
    text: str


class CompiledConstraint(NamedTuple):
    grammar: xgr.CompiledGrammar
    token_filter: torch.Tensor | None  # a one-row bitmask ANDed with the grammar's, or None


def grammar_spec(params: SamplingParams) -> GrammarSpec | None:
    """The request's constraint, or None for free text. The server refuses more than one."""
    if params.json_schema is not None:
        return GrammarSpec("json_schema", params.json_schema)
    if params.json_object:
        return GrammarSpec("json_object", JSON_OBJECT_SCHEMA)
    if params.regex is not None:
        return GrammarSpec("regex", params.regex)
    if params.ebnf is not None:
        return GrammarSpec("ebnf", params.ebnf)
    return None


def xgrammar_reason(exc: Exception) -> str:
    """xgrammar's message without its source-location prefix."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return _XGRAMMAR_PREFIX.sub("", lines[0] if lines else type(exc).__name__)


class GrammarCompilerCache:
    """Compiles specs against the served tokenizer; thread-safe (the engine thread and the server's
    event loop both submit). The xgrammar compiler is built on first use, in the pool."""

    def __init__(self, tokenizer, vocab_size: int, stop_token_ids: Collection[int]):
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size  # the model's logits width, which may exceed the tokenizer's size
        self.stop_token_ids = sorted(stop_token_ids)
        self._lock = threading.Lock()
        self._futures: OrderedDict[GrammarSpec, Future[CompiledConstraint]] = OrderedDict()
        self._pool = ThreadPoolExecutor(max_workers=COMPILE_WORKERS, thread_name_prefix="fleetserve-grammar")
        self._compiler: xgr.GrammarCompiler | None = None
        self._json_filter: torch.Tensor | None = None
        self._compiler_lock = threading.Lock()

    def submit(self, spec: GrammarSpec) -> Future[CompiledConstraint]:
        """The compiled grammar of ``spec``, compiling it in the background on a cache miss."""
        with self._lock:
            future = self._futures.get(spec)
            if future is not None:
                self._futures.move_to_end(spec)
                return future
            future = self._pool.submit(self._compile, spec)
            self._futures[spec] = future
            if len(self._futures) > CACHE_SIZE:
                self._futures.popitem(last=False)
            return future

    def compile(self, spec: GrammarSpec) -> CompiledConstraint:
        """Blocking form of ``submit`` (tests, benchmarks). Raises EngineError."""
        return self.submit(spec).result()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _compile(self, spec: GrammarSpec) -> CompiledConstraint:
        compiler = self._get_compiler()
        try:
            if spec.kind == "json_schema":
                grammar = compiler.compile_json_schema(spec.text, any_whitespace=False, strict_mode=True)
                return CompiledConstraint(grammar, self._json_filter)
            if spec.kind == "json_object":
                grammar = compiler.compile_json_schema(spec.text, any_whitespace=False, strict_mode=False)
                return CompiledConstraint(grammar, self._json_filter)
            if spec.kind == "regex":
                return CompiledConstraint(compiler.compile_regex(spec.text), None)
            return CompiledConstraint(compiler.compile_grammar(spec.text), None)
        except (RuntimeError, ValueError, TypeError) as exc:  # xgrammar reports bad input as these
            logger.debug("grammar of kind %s did not compile: %s", spec.kind, exc)
            raise EngineError(f"invalid {_DESCRIPTIONS[spec.kind]}: {xgrammar_reason(exc)}") from exc

    def _get_compiler(self) -> xgr.GrammarCompiler:
        with self._compiler_lock:
            if self._compiler is None:
                info = xgr.TokenizerInfo.from_huggingface(
                    self.tokenizer, vocab_size=self.vocab_size, stop_token_ids=self.stop_token_ids)
                self._compiler = xgr.GrammarCompiler(info, max_threads=XGRAMMAR_THREADS)
                self._json_filter = _ban_control_characters(info)
            return self._compiler


def _ban_control_characters(info: xgr.TokenizerInfo) -> torch.Tensor:
    """A one-row bitmask allowing every token whose bytes hold no control character (stop tokens too)."""
    stop = set(info.stop_token_ids)
    banned = [i for i, text in enumerate(info.decoded_vocab)
              if i not in stop and any(byte < _FIRST_PRINTABLE for byte in text)]
    return token_bitmask_without(banned, info.vocab_size)


def token_bitmask_without(token_ids: Collection[int], vocab_size: int) -> torch.Tensor:
    """A one-row xgrammar bitmask allowing every token but ``token_ids``."""
    row = xgr.allocate_token_bitmask(1, vocab_size)[0]
    for token in token_ids:
        word, bit = divmod(token, BITS_PER_WORD)
        cleared = ~(1 << bit) & 0xFFFFFFFF
        row[word] &= cleared - (1 << 32) if cleared >= 1 << 31 else cleared  # as a signed int32
    return row


_FIRST_PRINTABLE = 0x20
_DESCRIPTIONS: dict[GrammarKind, str] = {
    "json_schema": "JSON schema (response_format.json_schema.schema)",
    "json_object": "JSON object grammar",
    "regex": "regex",
    "ebnf": "EBNF grammar",
}
