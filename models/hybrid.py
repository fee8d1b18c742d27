"""Baseline: static hybrid, CT-ODE layers plus dense attention layers at a fixed ratio (Jamba).

The layout is data: layer ``i`` is a dense causal attention block (``TransformerBlock``) when
``i in config.attention_layers`` and a CT-ODE block (``CTBlock``) otherwise. Jamba interleaves one
attention layer per 8 Mamba layers; at our 2-4 layers the default ``attention_layers=(1,)`` puts the
recurrent layer first (it sees the time gaps and the signal) and attention second. Every token reads
attention in an attention layer, no token reads it in a CT layer: the attention fraction is
``len(attention_layers) / n_layers`` by construction, whatever the data.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import DataSpec, LayerStats, ModelConfig, ModelOutput, SRCDModel
from .ct_only import CTBlock, no_attention
from .routing import Route
from .transformer import TransformerBlock


class StaticHybrid(SRCDModel):
    """Baseline with a fixed layout: attention in the configured layers, CT-ODE in the rest."""

    family = "static-hybrid"

    def __init__(self, config: ModelConfig, spec: DataSpec):
        super().__init__(config, spec)
        self.attention_layers = tuple(sorted(set(config.attention_layers)))
        self.blocks = nn.ModuleList(
            TransformerBlock(config, config.attention_window) if i in self.attention_layers
            else CTBlock(config)
            for i in range(config.n_layers)
        )

    def forward(self, batch: dict, route: Route = Route(), diagnose_dense: bool = False
                ) -> ModelOutput:
        """Run the fixed layer layout; attention layers attend at every token."""
        x = self.embed(batch)  # (B, T, d)
        ones = torch.ones_like(batch["dtau"])  # (B, T)
        layers = []
        for block in self.blocks:
            if isinstance(block, CTBlock):
                x = block(x, batch["dtau"])
                layers.append(no_attention(batch))
            elif route.attention_off:  # attention switched off: keep the FFN, skip the read
                if block.ff is not None:
                    x = x + block.ff(block.norm_ff(x))
                layers.append(no_attention(batch))
            else:
                x = block(x)
                layers.append(LayerStats(episodic=ones, computed=ones.bool()))
        value_logits, signal_pred = self.heads(x)  # (B, T, V), (B, T)
        return ModelOutput(value_logits, signal_pred, layers)
