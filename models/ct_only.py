"""Baseline: CT-ODE working memory only, no attention (episodic = 0, computed = False everywhere).

One block, top to bottom::

    x ← x + CTODE(LN(x), Δτ)        # continuous-time recurrent state over the irregular gaps
    x ← x + FFN(LN(x))

The model can follow the dynamics and can carry a few bindings in its state, but it has no
content-addressed read: novel bindings must survive in a fixed-size state across the whole lag.
``CTBlock`` is reused by the static hybrid, Mixture-of-Depths and SeqBoat baselines.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import DataSpec, FeedForward, LayerStats, ModelConfig, ModelOutput, SRCDModel
from .routing import Route
from .working_memory import CTODE


class CTBlock(nn.Module):
    """Pre-norm residual CT-ODE block followed by a pre-norm FFN. (B, T, d) → (B, T, d)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.norm_working = nn.LayerNorm(config.d_model)
        self.working = CTODE(config.d_model, config.ct_dim, config.ct_dt, config.ct_diagonal)
        self.norm_ff = nn.LayerNorm(config.d_model)
        self.ff = FeedForward(config.d_model, config.d_ff) if config.d_ff else None

    def forward(self, x: torch.Tensor, dtau: torch.Tensor) -> torch.Tensor:
        # x: (B, T, d), dtau: (B, T)
        """Integrate working memory for one layer and add it residually."""
        x = x + self.working(self.norm_working(x), dtau)  # (B, T, d)
        if self.ff is not None:
            x = x + self.ff(self.norm_ff(x))
        return x


def no_attention(batch: dict) -> LayerStats:
    """Stats of a layer that reads no attention anywhere: episodic 0.0, computed False, (B, T)."""
    zeros = torch.zeros_like(batch["dtau"])  # (B, T)
    return LayerStats(episodic=zeros, computed=zeros.bool())


class CTOnly(SRCDModel):
    """Baseline without attention: stacked CT-ODE working-memory layers and the shared heads."""

    family = "ct-only"

    def __init__(self, config: ModelConfig, spec: DataSpec):
        super().__init__(config, spec)
        self.blocks = nn.ModuleList(CTBlock(config) for _ in range(config.n_layers))

    def forward(self, batch: dict, route: Route = Route(), diagnose_dense: bool = False
                ) -> ModelOutput:
        """Run every layer on working memory; no token reads episodic memory."""
        x = self.embed(batch)  # (B, T, d)
        layers = []
        for block in self.blocks:
            x = block(x, batch["dtau"])
            layers.append(no_attention(batch))
        value_logits, signal_pred = self.heads(x)  # (B, T, V), (B, T)
        return ModelOutput(value_logits, signal_pred, layers)
