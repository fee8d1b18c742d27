"""Baseline: dense causal Transformer (every token reads attention in every layer)."""

from __future__ import annotations

import torch
import torch.nn as nn

from .attention import CausalSelfAttention
from .common import DataSpec, FeedForward, LayerStats, ModelConfig, ModelOutput, SRCDModel
from .routing import Route


class TransformerBlock(nn.Module):
    """Pre-norm Transformer layer: causal attention then an MLP, each residual."""

    def __init__(self, config: ModelConfig, window: int | None = None):
        super().__init__()
        self.norm_attn = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config.d_model, config.n_heads, window,
                                        rope=config.attention_rope)
        self.norm_ff = nn.LayerNorm(config.d_model)
        self.ff = FeedForward(config.d_model, config.d_ff) if config.d_ff else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d)
        """Apply attention and MLP with residual connections."""
        x = x + self.attn.forward_dense(self.norm_attn(x))
        if self.ff is not None:
            x = x + self.ff(self.norm_ff(x))
        return x


class Transformer(SRCDModel):
    """Dense Transformer baseline: every token attends in every layer."""

    family = "transformer"

    def __init__(self, config: ModelConfig, spec: DataSpec, window: int | None = None):
        super().__init__(config, spec)
        self.blocks = nn.ModuleList(TransformerBlock(config, window)
                                    for _ in range(config.n_layers))

    def forward(self, batch: dict, route: Route = Route(), diagnose_dense: bool = False
                ) -> ModelOutput:
        """Dense attention everywhere; ``route`` and ``diagnose_dense`` change nothing here."""
        x = self.embed(batch)  # (B, T, d)
        layers = []
        ones = torch.ones_like(batch["dtau"])  # (B, T)
        for block in self.blocks:
            x = block(x)
            layers.append(LayerStats(episodic=ones, computed=ones.bool()))
        value_logits, signal_pred = self.heads(x)
        return ModelOutput(value_logits, signal_pred, layers)


class SlidingWindowTransformer(Transformer):
    """Baseline: causal attention restricted to the last ``attention_window`` positions."""

    family = "sliding-window"

    def __init__(self, config: ModelConfig, spec: DataSpec):
        super().__init__(config, spec, window=config.attention_window or 64)
