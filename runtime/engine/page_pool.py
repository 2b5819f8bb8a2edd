"""Accounting of KV cache pages: reference counts, an LRU of free pages, and the prefix cache.

A page is *free* when no live sequence references it. Free pages stay in an LRU; a free page may
still hold a cached prefix and be taken back by a prefix hit until it is reused for something else
(eviction). The prefix cache is a trie over full pages, stored as a dict keyed by
``(parent node id, the page's token ids, extra key)``: node ids are never reused, so matching is exact
(no hash collisions), and `extra_key` separates caches of different LoRA adapters.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import NamedTuple

ROOT_NODE = 0


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
        return node

    def reset_prefix_cache(self) -> None:
        self.cache.clear()
        self.page_key.clear()

    def _evict(self, page: int) -> None:
        key = self.page_key.pop(page, None)
        if key is not None:
            del self.cache[key]
