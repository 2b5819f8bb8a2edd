"""The routing key of a request: what the worker will cache, as chained page hashes.

The worker publishes `wire.chain_block_hashes(token_ids, page_size, wire.adapter_namespace(adapter))`
for every full page it caches, so the router computes exactly these for the prompt it is about to
route. Without the worker's tokenizer (a worker that does not serve /routing_info) the router falls
back to hashing the prompt's UTF-8 bytes in fixed blocks: such keys match only the router's own
predictions, never what a worker reports.
"""

from __future__ import annotations

from typing import NamedTuple

from fleetserve.runtime import wire

TEXT_BLOCK_BYTES = 64  # block size of the text fallback (the approximate scorer of llm-d uses 64 characters)
BYTES_PER_TOKEN = 4  # token estimate of the text fallback


class RequestKey(NamedTuple):
    block_hashes: tuple[int, ...]  # chained hashes of the prompt's full pages, in the adapter's namespace
    num_tokens: int  # prompt tokens (an estimate in the text fallback)
    page_size: int  # tokens per block
    adapter: str | None  # LoRA adapter the request asks for, None for the base model

    @property
    def is_empty(self) -> bool:
        return not self.block_hashes


def token_key(token_ids: list[int], page_size: int, adapter: str | None) -> RequestKey:
    hashes = wire.chain_block_hashes(token_ids, page_size, wire.adapter_namespace(adapter))
    return RequestKey(tuple(hashes), len(token_ids), page_size, adapter)


def text_key(text: str, adapter: str | None) -> RequestKey:
    data = list(text.encode("utf-8"))
    hashes = wire.chain_block_hashes(data, TEXT_BLOCK_BYTES, wire.adapter_namespace(adapter))
    num_tokens = max(1, len(data) // BYTES_PER_TOKEN) if data else 0
    return RequestKey(tuple(hashes), num_tokens, TEXT_BLOCK_BYTES // BYTES_PER_TOKEN, adapter)


def empty_key(adapter: str | None) -> RequestKey:
    return RequestKey((), 0, 1, adapter)
