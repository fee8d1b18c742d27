"""Fast torch path of routed attention for CPU (and any device without Triton).

Two regimes, chosen from the routed fraction ``p = N / (B·T)``:

- ``p == 1`` (every position routed) and no window: one causal SDPA call over the full sequence,
  so it costs what dense attention costs. With a window, or when ``p >= dense_above``, the routed
  queries are scattered into a full (B, H, T, Dh) query tensor and one masked/causal SDPA runs.
- otherwise: per sequence, the sorted routed rows go in chunks of ``chunk`` rows; a chunk attends
  only the key prefix it needs, ``[lo, last_pos]`` (``lo = first_pos - window + 1`` with a window,
  else 0): scores by one batched matmul, the causal mask applied only to the tail of keys after
  the chunk's first row, softmax in fp32, then a matmul with V. Work ≈ ``p + chunk/(2T)`` of
  dense. (Plain matmuls beat per-chunk masked SDPA calls here: about 0.04 against 0.075 of dense
  time at p = 0.02, T = 4096.)

Autograd flows through SDPA and the gathers, so the model trains through this path. Loop bounds are
read on the host (``tolist``), which is free on CPU; on CUDA the Triton kernel is used instead.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def routed_attention_torch(
    q: torch.Tensor,  # (N, H, Dh) routed rows, sorted by (batch, pos)
    k: torch.Tensor,  # (B, H, T, Dh)
    v: torch.Tensor,  # (B, H, T, Dh)
    batch_idx: torch.Tensor,  # (N,) int64
    pos: torch.Tensor,  # (N,) int64
    window: int | None = None,
    scale: float | None = None,
    chunk: int = 16,
    dense_above: float = 0.8,
) -> torch.Tensor:  # (N, H, Dh)
    n_rows, n_heads, head_dim = q.shape
    n_batch, _, seq_len, _ = k.shape
    if n_rows == 0:
        return q.clone()  # (0, H, Dh), still attached to the graph
    if n_rows == n_batch * seq_len and window is None:
        # rows are sorted and distinct, so they are every (b, t) in order
        q_full = q.view(n_batch, seq_len, n_heads, head_dim).transpose(1, 2)  # (B, H, T, Dh)
        out = F.scaled_dot_product_attention(q_full, k, v, is_causal=True, scale=scale)
        return out.transpose(1, 2).reshape(n_rows, n_heads, head_dim)  # (N, H, Dh)
    if n_rows >= dense_above * n_batch * seq_len:
        return _scatter_dense(q, k, v, batch_idx, pos, window, scale)
    return _chunked(q, k, v, batch_idx, pos, window, scale, chunk)


def _scatter_dense(q, k, v, batch_idx, pos, window, scale):
    n_batch, n_heads, seq_len, head_dim = k.shape
    q_full = q.new_zeros(n_batch, seq_len, n_heads, head_dim)  # (B, T, H, Dh)
    q_full = q_full.index_put((batch_idx, pos), q)
    q_full = q_full.transpose(1, 2)  # (B, H, T, Dh)
    if window is None:
        out = F.scaled_dot_product_attention(q_full, k, v, is_causal=True, scale=scale)
    else:
        t = torch.arange(seq_len, device=q.device)
        band = (t[None, :] <= t[:, None]) & (t[None, :] > t[:, None] - window)  # (T, T)
        out = F.scaled_dot_product_attention(q_full, k, v, attn_mask=band, scale=scale)
    return out.transpose(1, 2)[batch_idx, pos]  # (N, H, Dh)


def _chunked(q, k, v, batch_idx, pos, window, scale, chunk):
    n_batch, _, _, head_dim = k.shape
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    counts = torch.bincount(batch_idx, minlength=n_batch).tolist()
    pos_host = pos.tolist()
    outs = []
    start = 0
    for b, count in enumerate(counts):
        k_b, v_b = k[b], v[b]  # (H, T, Dh)
        for c0 in range(start, start + count, chunk):
            c1 = min(c0 + chunk, start + count)
            first, hi = pos_host[c0], pos_host[c1 - 1] + 1  # keys [lo, hi) cover the chunk
            lo = 0 if window is None else max(0, first - window + 1)
            p = pos[c0:c1]  # (C,)
            q_c = q[c0:c1].transpose(0, 1) * scale  # (H, C, Dh)
            scores = torch.matmul(q_c, k_b[:, lo:hi].transpose(1, 2))  # (H, C, L)
            if window is None:
                # keys <= first are visible to every row: mask only the tail (first, hi)
                if hi - 1 > first:
                    tail = torch.arange(first + 1, hi, device=q.device)  # (L_tail,)
                    scores[:, :, first + 1 - lo:].masked_fill_(tail[None, :] > p[:, None], float("-inf"))
            else:
                key_pos = torch.arange(lo, hi, device=q.device)  # (L,)
                hidden = (key_pos[None, :] > p[:, None]) | (key_pos[None, :] <= p[:, None] - window)
                scores.masked_fill_(hidden, float("-inf"))  # (C, L) broadcast over heads
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)  # (H, C, L)
            outs.append(torch.matmul(probs, v_b[:, lo:hi]).transpose(0, 1))  # (C, H, Dh)
        start += count
    return torch.cat(outs, dim=0)  # (N, H, Dh)
