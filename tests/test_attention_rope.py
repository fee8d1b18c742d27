"""Rotary position embedding in attention (issue 32: a relative position signal for baselines).

``model.attention_rope=true`` rotates queries and keys by their positions in every attention
layer; off by default, so every existing model computes what it always did.
"""

from __future__ import annotations

import torch

from cram.models.attention import CausalSelfAttention, rotate


def test_rotation_keeps_norms_and_makes_scores_depend_on_the_offset_only():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 8, generator=g), torch.randn(1, 8, generator=g)

    def score(i, j):
        return float((rotate(q, torch.tensor([i])) * rotate(k, torch.tensor([j]))).sum())

    assert torch.allclose(rotate(q, torch.tensor([5])).norm(), q.norm())
    assert abs(score(7, 3) - score(107, 103)) < 1e-4  # same offset, same score
    assert abs(score(7, 3) - score(7, 4)) > 1e-3  # another offset, another score


def test_routed_reads_equal_dense_reads_with_rope():
    torch.manual_seed(0)
    attn = CausalSelfAttention(16, 2, rope=True)
    h = torch.randn(2, 12, 16)  # (B, T, d)
    selected = torch.zeros(2, 12, dtype=torch.bool)
    selected[0, [0, 5, 11]] = True
    selected[1, [3, 7]] = True
    dense = attn.forward_dense(h)
    routed = attn.forward_routed(h, selected)
    assert torch.allclose(routed[selected], dense[selected], atol=1e-5)
    assert (routed[~selected] == 0).all()


def test_rope_changes_attention_and_is_off_by_default():
    torch.manual_seed(0)
    plain = CausalSelfAttention(16, 2)
    rotary = CausalSelfAttention(16, 2, rope=True)
    rotary.load_state_dict(plain.state_dict())  # same weights: rope has no parameters
    h = torch.randn(1, 10, 16)
    assert not plain.rope
    assert not torch.allclose(plain.forward_dense(h), rotary.forward_dense(h))
    assert torch.allclose(plain.forward_dense(h)[:, 0], rotary.forward_dense(h)[:, 0])
