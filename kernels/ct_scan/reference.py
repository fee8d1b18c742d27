"""Pure-torch reference of the CT-ODE working-memory scan (the test oracle and fallback).

Recurrence, one Euler step per token (see kernels/ct_scan/README.md)::

    h_t = h_{t-1} + gate_t ⊙ tanh(h_{t-1} @ w1ᵀ + u_t)

where ``u_t = W_2 x_t + b`` and ``gate_t = Δt·σ(W_τ·log(1 + Δτ_t))`` are precomputed for all t in
parallel by the caller. Slices are taken with ``unbind`` so that autograd's backward stays O(T)
(indexing ``u[:, t]`` in the loop makes it O(T²)).
"""

from __future__ import annotations

import torch


def ct_scan_reference(
    u: torch.Tensor,  # (B, T, D) input drive W_2 x_t + b
    gate: torch.Tensor,  # (B, T, D) step gate Δt·σ(W_τ log(1+Δτ_t)), in [0, Δt]
    w1: torch.Tensor,  # (D, D) recurrent matrix, or (D,) for a diagonal W_1
    h0: torch.Tensor | None = None,  # (B, D) initial state; zeros if None
) -> torch.Tensor:  # (B, T, D) states h_1..h_T
    """Plain PyTorch CT-ODE scan, one step at a time: the kernels' oracle. Returns (B, T, D)."""
    batch, _, dim = u.shape
    h = u.new_zeros(batch, dim) if h0 is None else h0
    diagonal = w1.dim() == 1
    states = []
    for u_t, g_t in zip(u.unbind(1), gate.unbind(1)):
        pre = h * w1 + u_t if diagonal else torch.addmm(u_t, h, w1.t())  # (B, D)
        h = h + g_t * torch.tanh(pre)
        states.append(h)
    if not states:  # T = 0
        return u.new_empty(batch, 0, dim)
    return torch.stack(states, dim=1)
