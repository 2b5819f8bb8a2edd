"""Reads `usage` out of a worker's answer as it streams past, without touching the bytes.

JSON answers are buffered (up to a bound) and parsed at the end; SSE answers are scanned line by
line, parsing only the `data:` events that carry a usage object. Used for the predicted-vs-reported
cached-token metrics.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

MAX_JSON_BYTES = 4 << 20


class Usage(NamedTuple):
    prompt_tokens: int
    cached_tokens: int | None  # None when the worker did not report it


def usage_of(payload: Any) -> Usage | None:
    if not isinstance(payload, dict):
        return None
    usage = payload.get("usage")
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(int(usage.get("prompt_tokens") or 0), int(cached) if cached is not None else None)


@dataclass(slots=True)
class UsageTap:
    is_sse: bool
    usage: Usage | None = None
    _buffer: bytearray = field(default_factory=bytearray)
    _overflow: bool = False

    def feed(self, chunk: bytes) -> None:
        if self._overflow:
            return
        self._buffer += chunk
        if not self.is_sse:
            if len(self._buffer) > MAX_JSON_BYTES:
                self._overflow = True
                self._buffer.clear()
            return
        *lines, rest = self._buffer.split(b"\n")
        for line in lines:
            self._scan(bytes(line))
        self._buffer = bytearray(rest)

    def _scan(self, line: bytes) -> None:
        if line.startswith(b"data:") and b'"usage"' in line:
            try:
                found = usage_of(json.loads(line[5:]))
            except ValueError:
                return
            if found is not None:
                self.usage = found

    def finish(self) -> Usage | None:
        if self._overflow:
            return self.usage
        if self.is_sse:
            self._scan(bytes(self._buffer))
        elif self._buffer:
            with contextlib.suppress(ValueError):
                self.usage = usage_of(json.loads(self._buffer))
        self._buffer.clear()
        return self.usage
