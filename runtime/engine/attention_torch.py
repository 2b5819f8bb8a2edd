"""The torch attention backend: gathers pages and calls SDPA, with cascade attention for shared prefixes.

Decodes (one new token) and prefills are attended in separate groups so a long prefill chunk never
pads a batch of decodes to its length. Whole pages are gathered with one contiguous copy each and
the unused tail of the last page is masked. When padding a group to its longest query and key
lengths would cost more than the calls saved (prompts of mixed lengths), each sequence is attended
alone instead, plain causal when it has no cached tokens so the kernel skips the masked blocks.

Cascade: sequences that start with the same pages (a shared system prompt, the n choices of one
request, prefix-cache hits) form their own group, and those pages are attended once for all its
queries — one flash-attention call against a single copy — while each sequence gathers only its own
remaining pages. The two partial softmaxes are merged exactly through their log-sum-exp. Without it
every sequence would copy the shared prefix for itself at every layer of every step.

On CPU, when the native kernel compiled (cpu_kernels.py), decodes skip the gather altogether: one
kernel call reads every sequence's K/V rows in place from its pages, shared prefixes included (they
stay in cache; a cascade split measured no faster and cost ~0.5 ms of extra calls per step on the
tiny model). Prefill groups keep gather + SDPA, where the copy is small next to the attention's own
compute.

Sliding windows (Mistral, Qwen2's `use_sliding_window`): each layer has a window or none, and the plan is
made once per distinct window. A windowed query at position p sees keys p - w + 1 .. p (transformers'
rule): masks carry the lower bound, a sequence attended alone gathers only the pages its window
reaches, the native kernel starts each sequence at its first in-window token, and windowed layers
skip cascade (its shared pages would be seen whole). Pages behind the window stay allocated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fleetserve.runtime.engine.attention import BatchLayout
from fleetserve.runtime.engine.cpu_kernels import PagedDecodeKernel

# Cascade only pays when it saves at least this many gathered tokens per layer.
CASCADE_MIN_SAVED_TOKENS = 256
# One more SDPA call costs about as much as this many query-key pairs of attention (measured on CPU:
# ~50 us per call, ~8 ns per pair for 12 heads of 64).
SINGLE_CALL_PAIRS = 8192


@dataclass(slots=True)
class _Group:
    """Sequences attended together."""

    q_index: torch.Tensor  # [B, Qmax] index into the batch's tokens (padding -> 0)
    valid_rows: torch.Tensor  # rows of the flattened [B * Qmax] output that are real queries
    out_index: torch.Tensor  # token index in the batch of each of those rows
    shared_pages: torch.Tensor | None  # pages every sequence of the group starts with (cascade)
    own_pages: torch.Tensor  # [B * num_own_pages] each sequence's remaining pages, padded with page 0
    num_own_pages: int
    # [B, 1, Qmax, num_own_pages * page_size] over the own pages: True = attend, or for a cascade group
    # additive (0 / -inf, the cache's dtype) as the flash kernel returning log-sum-exps wants it
    mask: torch.Tensor


@dataclass(slots=True)
class _Single:
    """A sequence attended on its own: no padding to its neighbours' lengths, causal blocks skipped."""

    start: int  # first of its query tokens in the batch
    q_len: int
    kv_len: int  # keys gathered: from the first of `pages` to its last token
    pages: torch.Tensor  # its pages (from the first its window reaches)
    mask: torch.Tensor | None  # [q_len, kv_len] True = attend; None when q_len == kv_len (plain causal)


@dataclass(slots=True)
class _KernelDecodes:
    """Decoding sequences handed to the native kernel."""

    q_index: torch.Tensor  # [B] index of each sequence's query token in the batch
    page_table: torch.Tensor  # [B, max_pages] int32, padded with page 0 (from the window's first page)
    kv_lens: torch.Tensor  # [B] int32, counted from the table's first page
    kv_starts: torch.Tensor | None  # [B] int32 first token attended, within the first page (a window)


@dataclass(slots=True)
class _Plan:
    """How one step's batch is attended under one sliding window (or none)."""

    groups: list[_Group]
    singles: list[_Single]
    kernel_decodes: _KernelDecodes | None


class TorchAttentionBackend:
    def __init__(self, kv_cache: list[torch.Tensor], scale: float, decode_kernel: PagedDecodeKernel | None = None,
                 sliding_windows: list[int | None] | None = None):
        """`sliding_windows`: each layer's window (None: full attention); None or empty: no layer slides."""
        self.kv_cache = kv_cache
        self.windows = list(sliding_windows or [None] * len(kv_cache))
        if len(self.windows) != len(kv_cache):
            raise ValueError(f"{len(self.windows)} sliding windows for {len(kv_cache)} layers")
        self.scale = scale
        self.page_size = kv_cache[0].shape[2]
        self.device = kv_cache[0].device
        usable = decode_kernel is not None and decode_kernel.supports(kv_cache[0].dtype, self.device)
        self.decode_kernel = decode_kernel if usable else None
        self._slots = torch.empty(0, dtype=torch.long)
        self._plans: dict[int | None, _Plan] = {}

    def plan(self, layout: BatchLayout) -> None:
        self._slots = torch.tensor(layout.slot_indices(), dtype=torch.long, device=self.device)
        starts, offset = [], 0
        for q_len in layout.query_lens:
            starts.append(offset)
            offset += q_len
        self._plans = {window: self._plan(layout, starts, window) for window in dict.fromkeys(self.windows)}

    def _plan(self, layout: BatchLayout, starts: list[int], window: int | None) -> _Plan:
        decode = [i for i, q in enumerate(layout.query_lens) if q == 1]
        prefill = [i for i, q in enumerate(layout.query_lens) if q > 1]
        plan = _Plan([], [], None)
        if decode and self.decode_kernel is not None:
            plan.kernel_decodes = self._for_kernel(layout, decode, starts, window)
            decode = []
        for idx in (decode, prefill):
            for members, common in self._clusters(layout, idx, window) if idx else ():
                if common == 0 and self._padding_costs_more(layout, members):
                    plan.singles.extend(self._single(layout, i, starts[i], window) for i in members)
                else:
                    plan.groups.append(self._group(layout, members, starts, common, window))
        return plan

    @staticmethod
    def _padding_costs_more(layout: BatchLayout, seqs: list[int]) -> bool:
        """Whether attending each sequence alone beats one padded, masked call: query-key pairs computed
        padded (every row to the longest query and key length) against each sequence's causal pairs plus
        a per-call overhead worth SINGLE_CALL_PAIRS pairs."""
        q_max = max(layout.query_lens[i] for i in seqs)
        kv_max = max(layout.kv_lens[i] for i in seqs)
        alone = sum(layout.query_lens[i] * (layout.kv_lens[i] - layout.query_lens[i] / 2) for i in seqs)
        return alone + SINGLE_CALL_PAIRS * len(seqs) < len(seqs) * q_max * kv_max

    def _single(self, layout: BatchLayout, i: int, start: int, window: int | None) -> _Single:
        ps, q_len, kv_len = self.page_size, layout.query_lens[i], layout.kv_lens[i]
        q0 = kv_len - q_len  # position of the first query
        first_page = 0 if window is None else max(0, q0 - window + 1) // ps
        base = first_page * ps  # position of the first key gathered
        pages = torch.tensor(layout.page_tables[i][first_page : -(-kv_len // ps)], dtype=torch.long)
        mask = None
        if q_len != kv_len or window is not None:  # query p sees keys up to q0 + p (and from q0 + p - w + 1)
            key_pos = base + torch.arange(kv_len - base)[None, :]
            q_pos = (q0 + torch.arange(q_len))[:, None]
            mask = key_pos <= q_pos
            if window is not None:
                mask &= key_pos > q_pos - window
        return _Single(start, q_len, kv_len - base, pages.to(self.device),
                       None if mask is None else mask.to(self.device))

    def _clusters(self, layout: BatchLayout, seqs: list[int], window: int | None) -> list[tuple[list[int], int]]:
        """Splits seqs into (members, common leading pages): sequences that start with the same pages, where
        attending those once (cascade) saves enough, and one cluster of all the others with 0. No cascade
        under a sliding window."""
        if window is not None:
            return [(seqs, 0)]
        by_first: dict[int, list[int]] = {}
        for i in seqs:
            by_first.setdefault(layout.page_tables[i][0] if layout.page_tables[i] else -1, []).append(i)
        clusters, rest = [], []
        for members in by_first.values():
            common = self._common_pages(layout, members)
            if common:
                clusters.append((members, common))
            else:
                rest.extend(members)
        if rest:
            clusters.append((rest, 0))
        return clusters

    def _for_kernel(self, layout: BatchLayout, seqs: list[int], starts: list[int],
                    window: int | None) -> _KernelDecodes:
        ps = self.page_size
        # under a window: the table starts at the window's first page, the kernel at its first token
        first = [0 if window is None else max(0, layout.kv_lens[i] - window) for i in seqs]
        tables = [layout.page_tables[i][f // ps :] for i, f in zip(seqs, first, strict=True)]
        width = max(len(t) for t in tables)
        table = [t + [0] * (width - len(t)) for t in tables]
        kv_starts = None if window is None else torch.tensor([f % ps for f in first], dtype=torch.int32)
        return _KernelDecodes(torch.tensor([starts[i] for i in seqs], dtype=torch.long),
                              torch.tensor(table, dtype=torch.int32),
                              torch.tensor([layout.kv_lens[i] - f // ps * ps for i, f in zip(seqs, first, strict=True)],
                                           dtype=torch.int32),
                              kv_starts)

    def _common_pages(self, layout: BatchLayout, seqs: list[int]) -> int:
        """Leading pages shared by every sequence and lying wholly before all of their queries."""
        if len(seqs) < 2:
            return 0
        ps = self.page_size
        limit = min((layout.kv_lens[i] - layout.query_lens[i]) // ps for i in seqs)
        tables = [layout.page_tables[i] for i in seqs]
        if limit == 0 or any(t[0] != tables[0][0] for t in tables):
            return 0  # the common case without sharing, decided in one pass
        count = 0
        for column in zip(*(t[:limit] for t in tables), strict=False):
            if any(page != column[0] for page in column):
                break
            count += 1
        return count if count * ps * (len(seqs) - 1) >= CASCADE_MIN_SAVED_TOKENS else 0

    def _group(self, layout: BatchLayout, seqs: list[int], starts: list[int], common: int,
               window: int | None) -> _Group:
        ps, dev = self.page_size, self.device
        num_own = -(-max(layout.kv_lens[i] for i in seqs) // ps) - common
        q_max = max(layout.query_lens[i] for i in seqs)
        q_len = torch.tensor([layout.query_lens[i] for i in seqs])
        kv_len = torch.tensor([layout.kv_lens[i] for i in seqs])
        q_pos = torch.arange(q_max)
        q_valid = q_pos[None, :] < q_len[:, None]
        q_index = torch.where(q_valid, torch.tensor([starts[i] for i in seqs])[:, None] + q_pos, 0)
        own = torch.tensor([(layout.page_tables[i][common:] + [0] * num_own)[:num_own] for i in seqs],
                           dtype=torch.long)
        # a key at absolute position j is visible to a query at absolute position p when j <= p
        q_abs = (kv_len - q_len)[:, None] + q_pos[None, :]
        key_abs = common * ps + torch.arange(num_own * ps)
        mask = key_abs[None, None, :] <= q_abs[:, :, None]
        if window is not None:
            mask &= key_abs[None, None, :] > q_abs[:, :, None] - window
        mask[:, :, 0] |= ~q_valid  # padded query rows see one key so a softmax never divides by zero
        if common:
            mask = torch.zeros(mask.shape, dtype=self.kv_cache[0].dtype).masked_fill_(~mask, float("-inf"))
        shared = torch.tensor(layout.page_tables[seqs[0]][:common], dtype=torch.long).to(dev) if common else None
        return _Group(q_index.to(dev), q_valid.flatten().nonzero().squeeze(1).to(dev), q_index[q_valid].to(dev),
                      shared, own.flatten().to(dev), num_own, mask.unsqueeze(1).to(dev))

    def forward(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        k_cache, v_cache = self.kv_cache[layer]
        heads, dim = k_cache.shape[2], k_cache.shape[3]
        k_cache.view(-1, heads, dim).index_copy_(0, self._slots, k)
        v_cache.view(-1, heads, dim).index_copy_(0, self._slots, v)
        out = torch.empty_like(q)
        plan = self._plans[self.windows[layer]]
        decodes, kernel = plan.kernel_decodes, self.decode_kernel
        if decodes is not None and kernel is not None:
            o, _ = kernel(q.index_select(0, decodes.q_index), k_cache, v_cache, decodes.page_table, decodes.kv_lens,
                          self.scale, decodes.kv_starts)
            out.index_copy_(0, decodes.q_index, o)
        for one in plan.singles:
            # 4-D [1, H, L, D] views: SDPA's CPU flash kernel takes them; 3-D inputs fall back to the math path
            ks, vs = (_gather(cache, one.pages, 1)[:, : one.kv_len].transpose(1, 2) for cache in (k_cache, v_cache))
            qs = q[one.start : one.start + one.q_len].unsqueeze(0).transpose(1, 2)
            o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=one.mask, is_causal=one.mask is None,
                                               scale=self.scale, enable_gqa=q.shape[1] != heads)
            out[one.start : one.start + one.q_len] = o[0].transpose(0, 1)
        for g in plan.groups:
            b, q_max = g.q_index.shape
            qg = q[g.q_index]  # [B, Qmax, Hq, D]
            ko, vo = (_gather(cache, g.own_pages, b) for cache in (k_cache, v_cache))  # [B, L, Hkv, D]
            if g.shared_pages is None:
                o = F.scaled_dot_product_attention(qg.transpose(1, 2), ko.transpose(1, 2), vo.transpose(1, 2),
                                                   attn_mask=g.mask, scale=self.scale,
                                                   enable_gqa=q.shape[1] != heads).transpose(1, 2)
            else:
                ks, vs = (_gather(cache, g.shared_pages, 1)[0] for cache in (k_cache, v_cache))  # [Ls, Hkv, D]
                o = self._cascade(qg, ks, vs, ko, vo, g.mask)
            rows = o.reshape(b * q_max, *q.shape[1:]).index_select(0, g.valid_rows)
            out.index_copy_(0, g.out_index, rows.to(q.dtype))
        return out

    def _cascade(self, q: torch.Tensor, ks: torch.Tensor, vs: torch.Tensor, ko: torch.Tensor, vo: torch.Tensor,
                 mask: torch.Tensor) -> torch.Tensor:
        """Attention over shared keys (ks/vs, seen by every query) and own keys (ko/vo, under the additive mask
        [B, 1, Qmax, L]) -> [B, Qmax, Hq, D]."""
        b, q_max, hq, d = q.shape
        hkv = ks.shape[1]
        g = hq // hkv
        # rows of one KV head: its G query heads x Qmax positions, so no KV is repeated for GQA
        qh = q.view(b, q_max, hkv, g, d).permute(0, 2, 3, 1, 4).reshape(b, hkv, g * q_max, d)
        o_sh, lse_sh = _shared_part(qh, ks, vs, self.scale)
        additive = mask.unsqueeze(2).expand(b, 1, g, q_max, mask.shape[-1]).reshape(b, 1, g * q_max, -1)
        o_own, lse_own = _flash_with_lse(qh, ko.transpose(1, 2), vo.transpose(1, 2), self.scale, additive)
        o = _merge(o_sh, lse_sh, o_own, lse_own)  # [B, Hkv, G*Qmax, D]
        return o.view(b, hkv, g, q_max, d).permute(0, 3, 1, 2, 4).reshape(b, q_max, hq, d)


_flash_cpu = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def _flash_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                    mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """SDPA that also returns each row's log-sum-exp: [B, H, R, D] x [B, H, L, D] -> out, lse [B, H, R] (float32).

    On CPU this is the flash kernel SDPA itself runs (blocked, never materialising the scores); elsewhere
    a plain computation. `mask` is additive (0 / -inf) and must leave every row at least one key.
    """
    if q.device.type == "cpu":
        out, lse = _flash_cpu(q, k, v, attn_mask=mask, scale=scale)
        return out, lse
    return _attention_with_lse(q, k, v, scale, mask)


def _attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                        mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The same, computed plainly (any device)."""
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale
    if mask is not None:
        scores = scores + mask.float()
    lse = scores.logsumexp(-1)
    return torch.matmul((scores - lse.unsqueeze(-1)).exp().to(v.dtype), v), lse


def _shared_part(qh: torch.Tensor, ks: torch.Tensor, vs: torch.Tensor,
                 scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Every query row of qh [B, Hkv, R, D] against one copy of the shared keys ks/vs [Ls, Hkv, D]."""
    b, hkv, rows, d = qh.shape
    flat = qh.transpose(0, 1).reshape(1, hkv, b * rows, d)
    o, lse = _flash_with_lse(flat, ks.transpose(0, 1).unsqueeze(0), vs.transpose(0, 1).unsqueeze(0), scale)
    return o.view(hkv, b, rows, d).transpose(0, 1), lse.view(hkv, b, rows).transpose(0, 1)


def _merge(o1: torch.Tensor, lse1: torch.Tensor, o2: torch.Tensor, lse2: torch.Tensor) -> torch.Tensor:
    """Exact softmax over the union of two key sets, from each part's normalised output and log-sum-exp."""
    m = torch.maximum(lse1, lse2)
    w1, w2 = (lse1 - m).exp().unsqueeze(-1), (lse2 - m).exp().unsqueeze(-1)
    return ((o1.float() * w1 + o2.float() * w2) / (w1 + w2)).to(o1.dtype)


def _gather(cache: torch.Tensor, pages: torch.Tensor, batch: int) -> torch.Tensor:
    """Whole pages through index_select on a 2-D view (one contiguous copy per page) -> [batch, L, H, D]."""
    heads, dim = cache.shape[2], cache.shape[3]
    rows = cache.view(cache.shape[0], -1).index_select(0, pages)
    return rows.view(batch, -1, heads, dim)
