"""Routed attention through torch's FlexAttention on the gathered queries (``backend="flex"``).

The routed rows become one query sequence of length N, and the keys and values of all B sequences
one key sequence of length B·T (``(1, H, B·T, Dh)``, a copy). A ``mask_mod`` on the rows'
original positions keeps row i to the keys of its own sequence with ``pos_i − window < j ≤ pos_i``
(flat key index ``batch_i·T + j``); ``create_block_mask`` turns it into a block-sparse mask, so
FlexAttention skips the key blocks no row of a query block can see, as the hand-written kernel
does. On CUDA both ``flex_attention`` and the block-mask construction are compiled
(``torch.compile``); on CPU FlexAttention runs eagerly and is inference-only (its backward
raises), so the entry point falls back to the torch path when gradients are needed there.
"""

from __future__ import annotations

import math

import torch

_COMPILED = {}


def _flex_fn(device: torch.device):
    from torch.nn.attention.flex_attention import flex_attention

    if device.type != "cuda":
        return flex_attention
    if "flex" not in _COMPILED:
        _COMPILED["flex"] = torch.compile(flex_attention, dynamic=True)
    return _COMPILED["flex"]


def routed_block_mask(batch_idx, pos, seq_len: int, n_batch: int, window: int | None):
    """Block mask over (N routed rows) × (B·T flat keys) for ``flex_attention``."""
    from torch.nn.attention.flex_attention import create_block_mask

    row_key = batch_idx * seq_len + pos  # (N,) flat key of each row's own position
    row_start = batch_idx * seq_len  # (N,) first flat key of each row's sequence

    def mask_mod(b, h, q_idx, kv_idx):
        own = row_key[q_idx]
        ok = (kv_idx <= own) & (kv_idx >= row_start[q_idx])
        if window is not None:
            ok = ok & (kv_idx > own - window)
        return ok

    return create_block_mask(mask_mod, 1, None, row_key.shape[0], n_batch * seq_len,
                             device=batch_idx.device, _compile=batch_idx.device.type == "cuda")


def routed_attention_flex(q, k, v, batch_idx, pos, window=None, scale=None):
    """FlexAttention routed attention; inputs validated, ``q`` the ``(N, H, Dh)`` rows, N ≥ 1.

    Returns ``(N, H, Dh)``.
    """
    _, n_heads, head_dim = q.shape
    n_batch, _, seq_len, _ = k.shape
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    if q.device.type != "cuda":  # forward-only there; it refuses inputs that require grad
        q, k, v = q.detach(), k.detach(), v.detach()
    block_mask = routed_block_mask(batch_idx, pos, seq_len, n_batch, window)
    q1 = q.transpose(0, 1).unsqueeze(0)  # (1, H, N, Dh)
    k1 = k.transpose(0, 1).reshape(1, n_heads, n_batch * seq_len, head_dim)  # (1, H, B·T, Dh)
    v1 = v.transpose(0, 1).reshape(1, n_heads, n_batch * seq_len, head_dim)
    out = _flex_fn(q.device)(q1, k1, v1, block_mask=block_mask, scale=scale)  # (1, H, N, Dh)
    return out[0].transpose(0, 1)  # (N, H, Dh)
