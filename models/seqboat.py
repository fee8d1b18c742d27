"""Baseline: SeqBoat-style learned per-token gate on attention, without consolidation.

After Ren et al., NeurIPS 2023.

One layer, top to bottom::

    x ← CTBlock(x, Δτ)                  # working memory (CT-ODE + FFN) over every token
    h = LN(x)
    g = σ(gate(h))                      # (B, T) probability that token t activates attention
    soft: x ← x + g · Attn_dense(h)     # every token computes attention; g is trained through it
    hard: x ← x + g · Attn(h) on {g > threshold}, unchanged elsewhere

``aux_loss`` adds ``sparsity_weight · mean(g)`` (summed over layers' means, averaged) so that gates
of tokens that do not need attention drift shut. Hard mode gathers only the gated queries
(``CausalSelfAttention.forward_routed``), so the routed output equals the soft output at the
gated rows exactly and is zero elsewhere; nothing is ever consolidated, so the attention a token
needs stays what it was: SeqBoat has no path that makes attention unnecessary for recurring
bindings, only a learned choice of where to spend it.

Reading of the original: SeqBoat's Sparse Modular Activation picks, per token, whether to activate
a gated attention unit, scales the activated output by the decision's probability, and runs that
unit on the compressed subsequence of activated tokens (local windows). Here every token writes the
key/value buffer (as in CRAM's episodic tier) and only the queries are gated, so the comparison with
CRAM isolates the routing decision; in SeqBoat proper a store would also have to be activated to be
retrievable.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import CausalSelfAttention
from .common import DataSpec, LayerStats, ModelConfig, ModelOutput, SRCDModel
from .cram import gumbel_softmax
from .ct_only import CTBlock
from .routing import Route


class SeqBoatBlock(nn.Module):
    """One SeqBoat-style layer: a learned sparse gate sends tokens to attention."""

    def __init__(self, config: ModelConfig, gate_bias: float, relaxed: bool = False):
        super().__init__()
        # relaxed (the matched twin, cram.models.matched): in training the gate is a sampled
        # near-binary decision (binary Gumbel-softmax at the route's temperature) and a selected
        # token reads attention at full weight, so training and hard evaluation decide alike;
        # SeqBoat's own soft mixing scales attention by σ(gate) in both
        self.relaxed = relaxed
        d = config.d_model
        self.threshold = config.seqboat_threshold
        self.ct = CTBlock(config)
        self.norm_attn = nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, config.n_heads, config.attention_window,
                                        rope=config.attention_rope)
        self.gate = nn.Linear(d, 1)
        with torch.no_grad():
            self.gate.bias.fill_(gate_bias)

    def forward(self, x: torch.Tensor, dtau: torch.Tensor, route: Route,
                uniform: torch.Tensor | None = None) -> tuple[torch.Tensor, LayerStats]:
        # x: (B, T, d), dtau: (B, T), uniform: (B, T, 3) pre-drawn noise (relaxed gates) or None
        """Working memory for every token; attention added where the gate opens."""
        x = self.ct(x, dtau)  # (B, T, d)
        h = self.norm_attn(x)  # (B, T, d)
        logit = self.gate(h).squeeze(-1)  # (B, T)
        g = torch.sigmoid(logit)  # (B, T)
        if route.attention_off:
            off = torch.zeros_like(g, dtype=torch.bool)  # (B, T)
            return x, LayerStats(episodic=off.to(x.dtype), computed=off, extra={"gate": g})
        if route.mixes:
            r = self.attn.forward_dense(h)  # (B, T, d)
            weight = self._decision(logit, route, uniform) if self.relaxed else g  # (B, T)
            x = x + weight[..., None] * r
            computed = torch.ones_like(g, dtype=torch.bool)
            episodic = weight
        else:
            selected = g > self.threshold if route.force == "none" \
                else torch.ones_like(g, dtype=torch.bool)  # (B, T), every token when forced
            r = self.attn.forward_routed(h, selected)  # (B, T, d), zeros off the selection
            x = x + (r if self.relaxed else g[..., None] * r)
            computed, episodic = selected, selected.to(x.dtype)
        return x, LayerStats(episodic=episodic, computed=computed, extra={"gate": g})

    @staticmethod
    def _decision(logit: torch.Tensor, route: Route, uniform: torch.Tensor) -> torch.Tensor:
        """Relaxed open/closed decision (B, T): binary Gumbel-softmax of logits [0, logit].

        ``uniform`` (B, T, 3): the layer's noise from ``Route.with_uniforms`` (two channels used).
        """
        pair = torch.stack([torch.zeros_like(logit), logit], dim=-1)  # (B, T, 2)
        return gumbel_softmax(pair, route.temperature, uniform[..., :2])[..., 1]


class SeqBoat(SRCDModel):
    """SeqBoat-style baseline: a learned per-token gate without consolidation."""

    family = "seqboat"
    #: weight of the gate sparsity penalty mean(g) in ``aux_loss``
    sparsity_weight: float = 0.01
    #: initial gate bias: σ(1) ≈ 0.73, so attention is open while retrieval is being learned
    gate_bias: float = 1.0
    #: sampled near-binary gates in training (see ``SeqBoatBlock``; the matched twin)
    relaxed_gates: bool = False

    def __init__(self, config: ModelConfig, spec: DataSpec):
        super().__init__(config, spec)
        self.blocks = nn.ModuleList(SeqBoatBlock(config, self.gate_bias, self.relaxed_gates)
                                    for _ in range(config.n_layers))

    def forward(self, batch: dict, route: Route = Route(), diagnose_dense: bool = False
                ) -> ModelOutput:
        """Embed, run the gated layers, and read out values and the next signal."""
        x = self.embed(batch)  # (B, T, d)
        layers, penalty = [], x.new_zeros(())
        if route.uniforms is None:  # the trainer draws them before the call (torch.compile)
            route = self.with_route_noise(route, batch)
        uniforms = route.uniforms or (None,) * len(self.blocks)  # drawn by relaxed gates only
        for block, uniform in zip(self.blocks, uniforms, strict=True):
            x, stats = block(x, batch["dtau"], route, uniform)
            layers.append(stats)
            penalty = penalty + stats.extra["gate"].mean()
        value_logits, signal_pred = self.heads(x)  # (B, T, V), (B, T)
        return ModelOutput(value_logits, signal_pred, layers,
                           aux_loss=self.sparsity_weight * penalty / len(self.blocks))
