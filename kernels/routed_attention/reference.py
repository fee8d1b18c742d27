"""Pure-torch reference of routed causal attention (the CPU path and the test oracle).

Only the routed query rows attend. Routed rows are a flat list over the batch, sorted by
(batch, position); each row attends causally over the keys of its own sequence inside a window of
``window`` past positions (``None``: the whole prefix).
"""

from __future__ import annotations

import math

import torch


def routed_attention_reference(
    q: torch.Tensor,  # (N, H, Dh) queries of the routed rows only
    k: torch.Tensor,  # (B, H, T, Dh) keys of every position (every token writes the buffer)
    v: torch.Tensor,  # (B, H, T, Dh) values of every position
    batch_idx: torch.Tensor,  # (N,) int64 sequence of each routed row
    pos: torch.Tensor,  # (N,) int64 position of each routed row, sorted within each sequence
    window: int | None = None,  # keys j with pos - window < j <= pos; None = all j <= pos
    scale: float | None = None,  # softmax scale; default 1/sqrt(Dh)
    chunk: int = 256,  # routed rows per chunk, bounds memory at chunk·T scores
) -> torch.Tensor:  # (N, H, Dh)
    """Routed causal attention by masked dense scores, in chunks of rows: the oracle."""
    n_rows, _, head_dim = q.shape
    seq_len = k.shape[2]
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    if n_rows == 0:
        return q.clone()  # (0, H, Dh), still attached to the graph
    out = q.new_zeros(q.shape)
    key_pos = torch.arange(seq_len, device=q.device)  # (T,)
    for start in range(0, n_rows, chunk):
        sl = slice(start, start + chunk)
        b, p = batch_idx[sl], pos[sl]  # (C,)
        k_rows, v_rows = k[b], v[b]  # (C, H, T, Dh)
        scores = torch.einsum("chd,chtd->cht", q[sl], k_rows) * scale  # (C, H, T)
        allowed = key_pos[None, :] <= p[:, None]  # (C, T)
        if window is not None:
            allowed &= key_pos[None, :] > (p[:, None] - window)
        scores = scores.masked_fill(~allowed[:, None, :], float("-inf"))
        out[sl] = torch.einsum("cht,chtd->chd", scores.softmax(-1), v_rows)
    return out
