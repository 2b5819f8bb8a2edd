"""Pure pieces of the embedding path: the batch policy, attention grouping, ragged attention against
per-sequence SDPA, pooling against a padded reference, Matryoshka truncation, input truncation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fleetserve.runtime.engine.embedding.attention import RaggedAttention, plan_groups
from fleetserve.runtime.engine.embedding.batcher import take_batch
from fleetserve.runtime.engine.embedding.inputs import resolve_message_format, truncate
from fleetserve.runtime.engine.embedding.pooling import pool, truncate_dimensions


@pytest.mark.parametrize(("lengths", "max_tokens", "max_inputs", "taken"), [
    ([], 100, 8, 0),
    ([10, 20, 30], 100, 8, 3),
    ([10, 20, 30], 50, 8, 2),  # the third would make 60 > 50
    ([10, 20, 30], 30, 8, 2),  # exactly the budget
    ([500, 1], 100, 8, 1),  # over the budget alone: it still runs, alone
    ([1] * 20, 100, 8, 8),  # the input cap
])
def test_take_batch(lengths: list[int], max_tokens: int, max_inputs: int, taken: int) -> None:
    assert take_batch(lengths, max_tokens, max_inputs) == taken


def test_plan_groups_keeps_padding_small_and_covers_every_sequence() -> None:
    lengths = [3, 200, 5, 190, 4, 7, 100]
    groups = plan_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        longest = max(lengths[i] for i in g)
        assert lengths[g[0]] == longest
        assert longest**2 * len(g) <= 1.25 * sum(lengths[i] ** 2 for i in g) or len(g) == 1
    assert [1, 3] in groups  # 200 and 190 share a call


@pytest.mark.parametrize("causal", [False, True])
def test_ragged_attention_equals_each_sequence_alone(causal: bool) -> None:
    torch.manual_seed(0)
    lengths = [5, 1, 17, 16, 3, 40]
    t, hq, hkv, d = sum(lengths), 4, 2, 8
    q, k, v = torch.randn(t, hq, d), torch.randn(t, hkv, d), torch.randn(t, hkv, d)
    attention = RaggedAttention(causal)
    attention.plan(lengths, torch.device("cpu"))
    out = attention.forward(q, k, v)
    start = 0
    for n in lengths:
        sl = slice(start, start + n)
        ref = F.scaled_dot_product_attention(q[sl].transpose(0, 1), k[sl].transpose(0, 1), v[sl].transpose(0, 1),
                                             is_causal=causal, enable_gqa=True).transpose(0, 1)
        torch.testing.assert_close(out[sl], ref, rtol=1e-5, atol=1e-5)
        start += n


def test_pooling_equals_the_padded_reference() -> None:
    torch.manual_seed(0)
    lengths = [3, 1, 6]
    hidden = torch.randn(sum(lengths), 5)
    parts = hidden.split(lengths)
    torch.testing.assert_close(pool(hidden, lengths, "cls"), torch.stack([p[0] for p in parts]))
    torch.testing.assert_close(pool(hidden, lengths, "lasttoken"), torch.stack([p[-1] for p in parts]))
    torch.testing.assert_close(pool(hidden, lengths, "mean"), torch.stack([p.mean(0) for p in parts]))


def test_truncate_dimensions_renormalizes_the_head() -> None:
    vectors = np.array([[3.0, 4.0, 12.0], [0.0, 2.0, 1.0]], dtype=np.float32)
    out = truncate_dimensions(vectors, 2)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 1.0]], rtol=1e-6)


def test_truncation_sides_and_message_formats() -> None:
    assert truncate([1, 2, 3, 4], 2) == [1, 2]
    assert truncate([1, 2, 3, 4], 2, "left") == [3, 4]
    assert truncate([1, 2], 5) == [1, 2]

    class Tok:
        chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"

    assert resolve_message_format("auto", Tok()) == "flat"
    assert resolve_message_format("structured", Tok()) == "structured"
    assert resolve_message_format(None, Tok()) is None
    Tok.chat_template = "{% for m in messages %}{{ m.content[0].text }}{% endfor %}"
    assert resolve_message_format("auto", Tok()) == "structured"
    Tok.chat_template = None
    assert resolve_message_format("auto", Tok()) is None  # no template: plain text
