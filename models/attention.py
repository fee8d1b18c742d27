"""Causal multi-head self-attention over a bounded KV buffer, dense or routed.

Every token writes its key/value; ``forward_dense`` lets every token read, ``forward_routed`` lets
only selected tokens read (their queries are gathered and attend through
``cram.kernels.routed_attention``), so unselected tokens cost no attention at all.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cram.kernels.routed_attention import routed_attention


def rotate(x: torch.Tensor, pos: torch.Tensor, base: float = 10_000.0) -> torch.Tensor:
    """Rotary position embedding: rotate channel pairs of ``x`` by angles ``pos · θ_i``.

    x: (..., P, Dh) with the position axis second to last; pos: (P,) positions. Pairs are
    (i, i + Dh/2) with θ_i = base^(−2i/Dh), so q·k depends on the positions only through their
    difference.
    """
    half = x.shape[-1] // 2
    theta = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) * 2 / x.shape[-1])
    angles = pos.to(torch.float32)[:, None] * theta[None, :]  # (P, half)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    a, b = x[..., :half], x[..., half:2 * half]
    return torch.cat([a * cos - b * sin, a * sin + b * cos, x[..., 2 * half:]], dim=-1)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention over the sequence, dense or on routed tokens only."""

    def __init__(self, d_model: int, n_heads: int, window: int | None = None,
                 rope: bool = False):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.window = window  # episodic buffer B: keys j with pos - B < j <= pos
        self.rope = rope  # rotary position embedding of queries and keys (relative positions)
        self.query = nn.Linear(d_model, d_model)
        self.key_value = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, H, T, Dh)
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)

    def _keys_values(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.key_value(h).chunk(2, dim=-1)  # (B, T, d) each
        k = self._split(k)  # (B, H, T, Dh)
        if self.rope:
            k = rotate(k, torch.arange(k.shape[2], device=k.device))
        return k, self._split(v)  # (B, H, T, Dh) each

    def forward_dense(self, h: torch.Tensor) -> torch.Tensor:  # h: (B, T, d) -> (B, T, d)
        """Dense causal attention of every token over all earlier ones (SDPA)."""
        b, t, d = h.shape
        q = self._split(self.query(h))  # (B, H, T, Dh)
        if self.rope:
            q = rotate(q, torch.arange(t, device=h.device))
        k, v = self._keys_values(h)
        if self.window is None or self.window >= t:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, Dh)
        else:
            i = torch.arange(t, device=h.device)
            allowed = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - self.window)  # (T, T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.out(y.transpose(1, 2).reshape(b, t, d))

    def forward_routed(self, h: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
        """Attention for the ``selected`` tokens only; zeros elsewhere.

        h: (B, T, d); selected: (B, T) bool. Returns (B, T, d).
        """
        b, t, d = h.shape
        batch_idx, pos = selected.nonzero(as_tuple=True)  # (N,), (N,) sorted by (batch, pos)
        out = h.new_zeros(b, t, d)
        if batch_idx.numel() == 0:
            return out
        k, v = self._keys_values(h)  # (B, H, T, Dh): every token writes the buffer
        q = self.query(h[batch_idx, pos]).view(-1, self.n_heads, self.head_dim)  # (N, H, Dh)
        if self.rope:
            q = rotate(q.transpose(0, 1), pos).transpose(0, 1)  # each query at its position
        y = routed_attention(q, k, v, batch_idx, pos, window=self.window)  # (N, H, Dh)
        out = out.index_put((batch_idx, pos), self.out(y.reshape(-1, d)))
        return out
