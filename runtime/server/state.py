"""What the server holds: the engine (behind a Protocol), its settings, and the per-app helpers.

Built once in `launch.py` (or by a test with a fake engine) and handed to `build_app`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import Request

from fleetserve.runtime.engine.cache_events import CacheState
from fleetserve.runtime.engine.types import EngineHealth, EngineStats, RequestOutput, SamplingParams
from fleetserve.runtime.server.admission import Admission
from fleetserve.runtime.server.chat_template import ChatRenderer
from fleetserve.runtime.server.logprobs import TokenStrings
from fleetserve.runtime.server.metrics import ServerMetrics
from fleetserve.runtime.server.reasoning import REASONING_FORMATS, ReasoningFormat


class EngineClient(Protocol):
    """The part of `AsyncEngine` the server uses."""

    tokenizer: Any
    model_config: Any

    async def start(self) -> None: ...
    async def shutdown(self) -> None: ...
    def check_request(self, prompt_token_ids: list[int], params: SamplingParams) -> None: ...
    async def check_grammar(self, params: SamplingParams) -> None: ...
    def generate(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams,
                 lora_name: str | None = None) -> AsyncIterator[RequestOutput]: ...
    async def abort(self, request_id: str) -> None: ...
    def stats(self) -> EngineStats: ...
    def health(self) -> EngineHealth: ...
    # LoRA (serving_lora.py, serving_models.py); an engine without LoRA raises AdapterError on load
    async def load_lora_adapter(self, name: str, path: str, pinned: bool = False) -> None: ...
    async def unload_lora_adapter(self, name: str) -> None: ...
    def lora_adapters(self) -> dict[str, str]: ...
    def find_adapter(self, ref: str) -> str | None: ...
    async def flush_cache(self) -> bool: ...
    def cache_state(self, epoch: str | None, after: int | None) -> CacheState: ...


@dataclass(slots=True)
class ServerSettings:
    model_path: str
    served_model_names: list[str] = field(default_factory=list)  # first is the name reported
    api_key: str | None = None
    chat_template: str | None = None  # template text (already loaded from a file)
    enable_cache_report: bool = False
    reasoning_parser: str | None = None
    max_running_requests: int = 256
    max_queued_requests: int | None = None
    server_args: dict[str, Any] = field(default_factory=dict)  # the command line, for /get_server_info
    simulation: dict[str, Any] | None = None  # the worker simulator's profile (--simulate); None: a real model
    lora_paths_file: str | None = None  # adapters loaded at start-up, before the server listens (serving_lora)

    def __post_init__(self) -> None:
        if not self.served_model_names:
            self.served_model_names = [self.model_path]
        if self.reasoning_parser is not None and self.reasoning_parser not in REASONING_FORMATS:
            raise ValueError(f"unknown reasoning parser {self.reasoning_parser!r}; "
                             f"choose one of {', '.join(REASONING_FORMATS)}")

    @property
    def model_name(self) -> str:
        return self.served_model_names[0]

    @property
    def system_fingerprint(self) -> str:
        """Sent in every completion: which backend answered, and unmistakably when it was the simulator."""
        if self.simulation is not None:
            return f"fleetserve-SIMULATED-{self.simulation['name']}"
        return "fleetserve"


@dataclass(slots=True)
class ServerState:
    engine: EngineClient
    settings: ServerSettings
    metrics: ServerMetrics
    admission: Admission
    chat: ChatRenderer
    token_strings: TokenStrings
    reasoning: ReasoningFormat | None
    started_at: float = field(default_factory=time.time)

    @classmethod
    def build(cls, engine: EngineClient, settings: ServerSettings) -> ServerState:
        return cls(
            engine=engine,
            settings=settings,
            metrics=ServerMetrics(settings.model_name, engine.stats, settings.max_running_requests),
            admission=Admission(settings.max_running_requests, settings.max_queued_requests, engine.stats),
            chat=ChatRenderer(engine.tokenizer, settings.chat_template),
            token_strings=TokenStrings(engine.tokenizer),
            reasoning=REASONING_FORMATS[settings.reasoning_parser] if settings.reasoning_parser else None,
        )

    @property
    def max_model_len(self) -> int:
        return int(self.engine.model_config.max_model_len)

    @property
    def vocab_size(self) -> int:
        return int(self.engine.model_config.vocab_size)


def get_state(request: Request) -> ServerState:
    return request.app.state.fleetserve
