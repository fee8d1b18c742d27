"""Baseline: Mixture-of-Depths (Raposo et al., 2024) routing to attention with a fixed capacity.

One layer, top to bottom::

    x ← CTBlock(x, Δτ)                                  # working memory for every token
    h = LN(x)
    s = router(h)                                       # (B, T) one score per token
    S = top-k of s per sequence, k = ceil(capacity · T) # the tokens that read attention
    x ← x + σ(s) · Attn(h)  on S,  x unchanged elsewhere

Only the k selected queries are gathered and attend (``CausalSelfAttention.forward_routed``); every
token still writes its key/value. The output is scaled by the router weight σ(s) so that the router
receives gradients through the selected tokens (MoD §3.3). The capacity is fixed, so the attention
fraction is ``k / T`` by construction, in training and at evaluation alike, whatever the data:
on SRCD the router can only learn *which* tokens (ideally the queries) spend the fixed budget.

Causality caveat: top-k over a sequence compares token t's score with the scores of later tokens,
so whether t attends depends on the future. The attention read itself stays causal, but the
selection pattern can leak a little information about later positions into earlier outputs, and
top-k cannot be run token by token during autoregressive decoding. MoD's fix is a small causal
predictor trained (on stop-gradient hidden states, with binary cross-entropy) to guess membership of
the top-k; we train one (``aux_loss``) and report its logits in ``LayerStats.extra``, but routing
uses the exact top-k so that the capacity holds exactly. SRCD evaluation is teacher-forced over
whole sequences, where top-k is well defined.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import CausalSelfAttention
from .common import DataSpec, LayerStats, ModelConfig, ModelOutput, SRCDModel
from .ct_only import CTBlock
from .routing import Route


def capacity_k(capacity: float, length: int) -> int:
    """Tokens per sequence that attend: ceil(capacity · T), at least 1 and at most T."""
    return max(1, min(length, math.ceil(capacity * length - 1e-9)))


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(B, T) scores → (B, T) bool with exactly ``k`` True per row (the k largest scores)."""
    idx = scores.topk(k, dim=-1).indices  # (B, k)
    return torch.zeros_like(scores, dtype=torch.bool).scatter(-1, idx, True)


class MoDBlock(nn.Module):
    """One Mixture-of-Depths layer: a router picks a fixed capacity of tokens for attention."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.d_model
        self.capacity = config.mod_capacity
        self.ct = CTBlock(config)
        self.norm_attn = nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, config.n_heads, config.attention_window,
                                        rope=config.attention_rope)
        self.router = nn.Linear(d, 1)
        self.predictor = nn.Sequential(nn.Linear(d, d // 2 or 1), nn.GELU(),
                                       nn.Linear(d // 2 or 1, 1))

    def forward(self, x: torch.Tensor, dtau: torch.Tensor, route: Route
                ) -> tuple[torch.Tensor, LayerStats, torch.Tensor]:
        # x: (B, T, d), dtau: (B, T)
        """Attend at the top-capacity tokens by router score; the others pass through."""
        x = self.ct(x, dtau)  # (B, T, d)
        h = self.norm_attn(x)  # (B, T, d)
        scores = self.router(h).squeeze(-1)  # (B, T)
        k = capacity_k(self.capacity, x.shape[1])
        selected = top_k_mask(scores.detach(), k)  # (B, T) bool, k per row
        if route.attention_off:
            selected = torch.zeros_like(selected)
        elif route.force == "episodic":
            selected = torch.ones_like(selected)
        r = self.attn.forward_routed(h, selected)  # (B, T, d), zeros off the selection
        x = x + torch.sigmoid(scores)[..., None] * r
        pred_logits = self.predictor(h.detach()).squeeze(-1)  # (B, T) causal guess of membership
        target = top_k_mask(scores.detach(), k).to(pred_logits.dtype)  # (B, T)
        pred_loss = F.binary_cross_entropy_with_logits(pred_logits, target)
        stats = LayerStats(episodic=selected.to(x.dtype), computed=selected,
                           extra={"router_scores": scores, "predictor_logits": pred_logits})
        return x, stats, pred_loss


class MixtureOfDepths(SRCDModel):
    """Mixture-of-Depths baseline: a fixed share of tokens per layer reads attention."""

    family = "mod"
    #: weight of the causal predictor's BCE loss in ``aux_loss`` (it only trains the predictor)
    predictor_weight: float = 0.01

    def __init__(self, config: ModelConfig, spec: DataSpec):
        super().__init__(config, spec)
        self.blocks = nn.ModuleList(MoDBlock(config) for _ in range(config.n_layers))

    def forward(self, batch: dict, route: Route = Route(), diagnose_dense: bool = False
                ) -> ModelOutput:
        """Embed, run the MoD layers, and read out values and the next signal."""
        x = self.embed(batch)  # (B, T, d)
        layers, aux = [], x.new_zeros(())
        for block in self.blocks:
            x, stats, pred_loss = block(x, batch["dtau"], route)
            layers.append(stats)
            aux = aux + pred_loss
        value_logits, signal_pred = self.heads(x)  # (B, T, V), (B, T)
        return ModelOutput(value_logits, signal_pred, layers,
                           aux_loss=self.predictor_weight * aux / len(self.blocks))
