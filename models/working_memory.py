"""CT-ODE working memory: a continuous-time recurrent state over irregular time gaps.

One Euler step per token (docs/method.md)::

    h_t = h_{t-1} + Δt · σ(W_τ · log(1 + Δτ_t)) ⊙ tanh(W_1 h_{t-1} + W_2 x_t)

The gate and the drive ``W_2 x_t`` are computed for all t at once; the sequential part runs in
``cram.kernels.ct_scan.ct_scan`` (C++/Triton fast paths, pure-torch twin).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from cram.kernels.ct_scan import ct_scan


class CTODE(nn.Module):
    """Continuous-time ODE working memory: a gated recurrence integrated over dtau."""

    def __init__(self, d_model: int, state_dim: int, dt: float = 1.0, diagonal: bool = False):
        super().__init__()
        self.dt = dt
        self.drive = nn.Linear(d_model, state_dim)  # W_2 x_t + b
        self.time_gate = nn.Linear(1, state_dim)  # W_τ log(1+Δτ) + b_τ, one rate per channel
        if diagonal:
            self.w1 = nn.Parameter(-0.5 * torch.ones(state_dim))
        else:  # start near a contracting map so that the state stays bounded
            self.w1 = nn.Parameter(-0.5 * torch.eye(state_dim)
                                   + 0.05 * torch.randn(state_dim, state_dim))
        self.readout = nn.Linear(state_dim, d_model)

    def forward(self, x: torch.Tensor, dtau: torch.Tensor) -> torch.Tensor:
        # x: (B, T, d), dtau: (B, T) -> (B, T, d)
        """Integrate the hidden state along the sequence with the tokens' time gaps."""
        u = self.drive(x)  # (B, T, D)
        gate = self.dt * torch.sigmoid(self.time_gate(torch.log1p(dtau)[..., None]))  # (B, T, D)
        states = ct_scan(u, gate, self.w1)  # (B, T, D)
        return self.readout(states)
