"""Accounting of KV cache pages: reference counts, an LRU of free pages, and the prefix cache.

A page is *free* when no live sequence references it. Free pages stay in an LRU; a free page may
still hold a cached prefix and be taken back by a prefix hit until it is reused for something else
(eviction). The prefix cache is a trie over full pages, stored as a dict keyed by
``(parent node id, the page's token ids, extra key)``: node ids are never reused, so matching is exact
(no hash collisions), and `extra_key` separates caches of different LoRA adapters.

Each cached page also gets a stable block hash (`wire.block_hash` of its parent's hash, its tokens and
its adapter namespace), published in `events` as it is stored and evicted, so that a router can tell
what this worker holds (docs/router.md, "Routing contract").
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import NamedTuple

from fleetserve.runtime.engine.cache_events import CacheEventLog
from fleetserve.runtime.wire import ROOT_BLOCK_HASH, block_hash

ROOT_NODE = 0


def cache_namespace(extra: Hashable) -> str:
    """The block-hash namespace of an extra cache key: "" for the base model, else the adapter's name
    (the key may be the name or a tuple that starts with it)."""
    if extra is None:
        return ""
    if isinstance(extra, tuple):
        return str(extra[0])
    return str(extra)


class CacheKey(NamedTuple):
    parent: int
    tokens: tuple[int, ...]
    extra: Hashable


class CachedPage(NamedTuple):
    node: int
    page: int


class PrefixMatch(NamedTuple):
    pages: list[int]
    nodes: list[int]


class PagePool:
    def __init__(self, num_pages: int, page_size: int, enable_prefix_caching: bool = True):
        self.num_pages = num_pages
        self.page_size = page_size
        self.enable_prefix_caching = enable_prefix_caching
        self.ref_counts = [0] * num_pages
        self.free: OrderedDict[int, None] = OrderedDict((p, None) for p in range(num_pages))
        self.cache: dict[CacheKey, CachedPage] = {}
        self.page_key: dict[int, CacheKey] = {}
        self._next_node = ROOT_NODE + 1
        self.node_hash: dict[int, int] = {}  # cached node -> its block hash
        self.events = CacheEventLog()
        self.num_queries = 0  # prompt tokens looked up
        self.num_hits = 0  # of those, tokens found

    @property
    def num_free(self) -> int:
        return len(self.free)

    @property
    def num_used(self) -> int:
        return self.num_pages - len(self.free)

    def can_allocate(self, n: int) -> bool:
        return n <= len(self.free)

    def allocate(self, n: int) -> list[int]:
        """Takes n free pages, least recently used first, evicting any prefix they held."""
        assert n <= len(self.free), "allocate() without can_allocate()"
        pages = []
        for _ in range(n):
            page, _ = self.free.popitem(last=False)
            self._evict(page)
            self.ref_counts[page] = 1
            pages.append(page)
        return pages

    def release(self, pages: Sequence[int]) -> None:
        """Drops one reference to each page; pages are released last-first so a sequence's tail pages
        (least likely to be shared) are evicted before its head pages."""
        for page in reversed(pages):
            assert self.ref_counts[page] > 0, f"page {page} released twice"
            self.ref_counts[page] -= 1
            if self.ref_counts[page] == 0:
                self.free[page] = None

    def match_prefix(self, tokens: Sequence[int], extra: Hashable = None) -> PrefixMatch:
        """Longest run of cached full pages that prefixes `tokens`; takes a reference on each."""
        match = PrefixMatch([], [])
        if not self.enable_prefix_caching:
            return match
        ps, parent = self.page_size, ROOT_NODE
        for start in range(0, len(tokens) - ps + 1, ps):
            hit = self.cache.get(CacheKey(parent, tuple(tokens[start : start + ps]), extra))
            if hit is None:
                break
            match.pages.append(hit.page)
            match.nodes.append(hit.node)
            parent = hit.node
        for page in match.pages:
            if self.ref_counts[page] == 0:
                del self.free[page]
            self.ref_counts[page] += 1
        return match

    def record_lookup(self, num_queried: int, num_hit: int) -> None:
        self.num_queries += num_queried
        self.num_hits += num_hit

    def register(self, parent: int, tokens: Sequence[int], page: int, extra: Hashable = None) -> int:
        """Publishes a full page's content; returns the node id that the next page chains from.

        When identical content is already cached (two sequences computed it in the same step), the
        existing node is returned and this page stays private to its sequence.
        """
        key = CacheKey(parent, tuple(tokens), extra)
        existing = self.cache.get(key)
        if existing is not None:
            return existing.node
        node = self._next_node
        self._next_node += 1
        if self.enable_prefix_caching and page not in self.page_key:
            self.cache[key] = CachedPage(node, page)
            self.page_key[page] = key
            parent_hash = ROOT_BLOCK_HASH if parent == ROOT_NODE else self.node_hash.get(parent)
            if parent_hash is not None:  # else the parent left the cache: this page is unreachable
                digest = block_hash(parent_hash, key.tokens, cache_namespace(extra))
                self.node_hash[node] = digest
                self.events.stored(digest)
        return node

    def drop_cached(self, extra: Hashable) -> int:
        """Takes every cached page of one extra key (an adapter's load) out of the prefix cache, as eviction
        would; pages still used by running sequences stay theirs. Returns how many left the cache."""
        pages = [page for page, key in self.page_key.items() if key.extra == extra]
        for page in pages:
            self._evict(page)
        return len(pages)

    def reset_prefix_cache(self) -> None:
        self.cache.clear()
        self.page_key.clear()
        self.node_hash.clear()
        self.events.reset()

    def _evict(self, page: int) -> None:
        key = self.page_key.pop(page, None)
        if key is not None:
            digest = self.node_hash.pop(self.cache.pop(key).node, None)
            if digest is not None:
                self.events.removed(digest)
