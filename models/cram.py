"""CRAM: a hybrid layer with three memory tiers and a router that learns to skip attention.

One CRAM block (docs/method.md, with the project's decisions)::

    x ← x + working(LN(x), Δτ)                      # CT-ODE working memory: always runs, O(T)
                                                     #   (training with working_dropout p: one
                                                     #   keep mask per sequence, 0 or 1/(1-p))
    h = LN(x)
    f_sem = semantic(h)                              # low-rank MLP, rank r
    q̂ = familiarity(h)                               # predicts q from the hidden state alone
    π = router([h, q̂])                               # 3-way over (working, episodic, semantic)
    r_E = attention(h) at tokens that read episodic memory
    q  = exp(-D(f_sem, r_E) / σ)                     # D: KL of value-probe readouts ("value"),
                                                     #    or mean squared error ("raw");
                                                     #    or Σ_v p_E·p_S (value "agreement")
    x ← x + π_episodic · r_E + π_semantic · f_sem
    x ← x + FFN(LN(x))

Routing "working" means: no retrieval beyond the working memory already added.

A forward pass takes one ``Route`` (``cram.models.routing``). ``soft`` (training): Gumbel-softmax
probabilities at a temperature; attention is computed for every token so that the mixture has
gradients. ``hard`` (evaluation, inference): the router's argmax without noise; only tokens routed
to episodic memory gather their queries and attend (``CausalSelfAttention.forward_routed``), so a
consolidated token computes no attention. The router reads q̂ (never q) unless
``routing.router_reads="q"`` (``cram-oracle-q``, the paper as written, which must compute attention
for every token to know q).

Diagnostics: q needs the dense episodic output of every token. In hard mode it is computed only on
request (``diagnose_dense=True``, the evaluator's q and probe statistics), as a pass of its own that
never feeds the output and is never counted in ``LayerStats.computed``.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F

from cram.core.errors import ConfigError

from .attention import CausalSelfAttention
from .common import DataSpec, FeedForward, LayerStats, ModelConfig, ModelOutput, SRCDModel
from .routing import Route
from .tiers import EVENT_QUERY, TIERS, Tier, raw_mse, readout_kl
from .working_memory import CTODE

WORKING, EPISODIC, SEMANTIC = int(Tier.WORKING), int(Tier.EPISODIC), int(Tier.SEMANTIC)


class SemanticMemory(nn.Module):
    """Low-rank MLP: d → r → d with a GELU in the bottleneck. (B, T, d) → (B, T, d)."""

    def __init__(self, d_model: int, rank: int):
        super().__init__()
        self.down = nn.Linear(d_model, rank)
        self.up = nn.Linear(rank, d_model)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Low-rank MLP read of the semantic tier: (B, T, d) -> (B, T, d)."""
        return self.up(F.gelu(self.down(h)))


class FamiliarityHead(nn.Module):
    """q̂(h) ∈ (0, 1): predicts the consolidation score from the hidden state. (B, T, d) → (B, T)."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def logit(self, h: torch.Tensor) -> torch.Tensor:
        """log-odds of q̂; (B, T, d) → (B, T)."""
        return self.net(h).squeeze(-1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Predicted familiarity q̂ in (0, 1) per token: (B, T, d) -> (B, T)."""
        return torch.sigmoid(self.logit(h))


def gumbel_softmax(logits: torch.Tensor, temperature: float, uniform: torch.Tensor
                   ) -> torch.Tensor:
    """Soft Gumbel-softmax sample over the last dim from ``uniform`` (the shape of ``logits``).

    The uniforms are drawn before the forward pass (``Route.with_uniforms``, from the route's
    generator: a seed argument), so a compiled model meets no generator.
    """
    u = uniform.to(logits.dtype)
    exponential = -torch.log(u.clamp_min(1e-10))  # Exp(1) samples
    gumbel = -torch.log(exponential.clamp_min(1e-10))  # Gumbel(0, 1) samples
    return torch.softmax((logits + gumbel) / temperature, dim=-1)


class CRAMBlock(nn.Module):
    """One CRAM layer: working memory, episodic attention and semantic memory behind a router."""

    def __init__(self, config: ModelConfig, spec: DataSpec):
        super().__init__()
        d = config.d_model
        self.routing = config.routing
        self.q_sigma = config.q_sigma
        self.working_layout = config.working_layout
        has_working = config.working_layout != "off"
        self.norm_working = nn.LayerNorm(d) if has_working else None
        self.working = (CTODE(d, config.ct_dim, config.ct_dt, config.ct_diagonal)
                        if has_working else None)
        self.norm_memory = nn.LayerNorm(d)
        self.episodic = CausalSelfAttention(d, config.n_heads, config.attention_window,
                                            rope=config.attention_rope)
        self.semantic = SemanticMemory(d, config.semantic_rank)
        self.familiarity = FamiliarityHead(d, config.familiarity_hidden)
        self.value_probe = nn.Linear(d, spec.n_values)  # decodes what a memory output "says"
        self.router = nn.Linear(d + 1, len(TIERS))
        with torch.no_grad():
            self.router.bias.zero_()
            self.router.bias[EPISODIC] = config.router_episodic_bias
        self.norm_ff = nn.LayerNorm(d)
        self.ff = FeedForward(d, config.d_ff) if config.d_ff else None

    # ------------------------------------------------------------------ consolidation score
    def consolidation_score(self, r_episodic: torch.Tensor, f_semantic: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Agreement q (B, T) and the probe logits of r_E (probe trains) and f_sem (frozen)."""
        probe_e = self.value_probe(r_episodic.detach())  # (B, T, V): trains the probe
        probe_s = F.linear(f_semantic, self.value_probe.weight.detach(),
                           self.value_probe.bias.detach())  # (B, T, V): trains semantic only
        with torch.no_grad():
            if self.routing.q_space == "value":
                log_p_e = F.log_softmax(probe_e, -1)  # (B, T, V)
                log_p_s = F.log_softmax(probe_s, -1)
                if self.routing.q_value_score == "agreement":
                    return (log_p_e.exp() * log_p_s.exp()).sum(-1), probe_e, probe_s  # (B, T)
                distance = readout_kl(log_p_e, log_p_s)  # KL(p_E ‖ p_S), (B, T)
            else:
                distance = raw_mse(f_semantic, r_episodic)  # (B, T)
            q = torch.exp(-distance / self.q_sigma)
        return q, probe_e, probe_s

    # ------------------------------------------------------------------ routing
    def router_feature(self, q: torch.Tensor | None, qhat: torch.Tensor, qhat_logit: torch.Tensor
                       ) -> torch.Tensor:
        """What the router reads besides h: q̂ (or the oracle q), as probability or log-odds."""
        oracle = self.routing.oracle
        if self.routing.router_feature == "logit":
            feature = torch.logit(q, eps=1e-4) if oracle else qhat_logit
        else:
            feature = q if oracle else qhat
        return feature.detach()  # (B, T)

    def choose(self, logits: torch.Tensor, is_query: torch.Tensor | None, route: Route,
               dtype: torch.dtype, uniform: torch.Tensor | None = None,
               given: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Tier choice (B, T) int64 and the weights that mix the tiers (B, T, 3).

        ``uniform``: this layer's Gumbel uniforms (B, T, 3) from ``Route.with_uniforms``.
        ``given``: this layer's choice (B, T) from ``Route.choices``, used instead of the router's.
        """
        if given is not None:  # another model's routes (evaluation only, a hard route)
            if given.shape != logits.shape[:2]:
                raise ConfigError(f"Route.choices: a layer's choice has shape {tuple(given.shape)}"
                                  f", the batch {tuple(logits.shape[:2])}")
            return given, F.one_hot(given, len(TIERS)).to(dtype)
        if self.routing.static_routing:  # queries read episodic memory, others stay working
            choice = torch.where(is_query, EPISODIC, WORKING)
        elif route.samples:
            probs = gumbel_softmax(logits, route.temperature, uniform)  # (B, T, 3)
            choice = probs.argmax(-1)
        else:
            choice = logits.argmax(-1)  # (B, T)
        choice = route.apply_force(choice)
        choice = route.cap_attention(choice, logits)  # evaluation at an attention budget
        if route.mixes and not self.routing.static_routing:
            return choice, probs
        return choice, F.one_hot(choice, len(TIERS)).to(dtype)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, batch: dict, route: Route, diagnose_dense: bool = False,
                uniform: torch.Tensor | None = None, working_keep: torch.Tensor | None = None,
                given: torch.Tensor | None = None) -> tuple[torch.Tensor, LayerStats]:
        """One CRAM layer: x (B, T, d) → x (B, T, d) and what the layer did.

        ``uniform``: this layer's pre-drawn Gumbel uniforms (B, T, 3), if the route has them.
        ``working_keep``: this layer's working-memory dropout (B,), if the route has it.
        ``given``: this layer's tier choice (B, T), if the route gives one (``Route.choices``).
        """
        layer_input = x  # (B, T, d)
        if self.working is not None:
            working = self.working(self.norm_working(x), batch["dtau"])  # (B, T, d)
            if working_keep is not None:
                working = working * working_keep[:, None, None].to(working.dtype)
            x = x + working
        h = self.norm_memory(layer_input if self.working_layout == "parallel" else x)  # (B, T, d)
        f_sem = self.semantic(h)  # (B, T, d)
        qhat_logit = self.familiarity.logit(h.detach())  # (B, T)
        qhat = torch.sigmoid(qhat_logit)  # (B, T)
        # only cram-static reads the query mask (an SRCD input); it is refused on token tasks
        is_query = batch["event"] == EVENT_QUERY if self.routing.static_routing else None

        dense = route.soft or self.routing.oracle  # the layer itself needs every token's r_E
        r_dense = q = probe_e = probe_s = None
        if dense or diagnose_dense:
            r_dense = self.episodic.forward_dense(h)  # (B, T, d)
            q, probe_e, probe_s = self.consolidation_score(r_dense, f_sem)  # (B, T), (B, T, V) x2
        feature = self.router_feature(q, qhat, qhat_logit)  # (B, T)
        logits = self.router(torch.cat([h, feature[..., None]], dim=-1))  # (B, T, 3)
        choice, mix = self.choose(logits, is_query, route, x.dtype, uniform,
                                  given)  # (B, T), (B, T, 3)

        if dense:
            r_e, computed = r_dense, torch.ones_like(choice, dtype=torch.bool)  # (B, T)
        else:  # inference: only the tokens routed to episodic memory attend
            computed = choice == EPISODIC  # (B, T)
            r_e = self.episodic.forward_routed(h, computed)  # (B, T, d), zeros elsewhere
        x = x + mix[..., EPISODIC, None] * r_e
        if not route.semantic_off:  # ablate="semantic" (evaluation only): f_sem adds nothing
            x = x + mix[..., SEMANTIC, None] * f_sem
        if self.ff is not None:
            x = x + self.ff(self.norm_ff(x))
        return x, LayerStats(
            episodic=mix[..., EPISODIC], computed=computed, choice=choice, r_episodic=r_dense,
            f_semantic=f_sem, probe_episodic=probe_e, probe_semantic=probe_s, q=q,
            q_space=self.routing.q_space, qhat=qhat, logits=logits,
            extra={"probe_bias": self.value_probe.bias.detach()})  # (V,): the probe of a zero
        #   output, i.e. the working tier's readout (no retrieval adds nothing to x)


class CRAM(SRCDModel):
    """The CRAM model: embedding, CRAM layers, and the shared value and signal heads."""

    family = "cram"
    consolidates = True

    def __init__(self, config: ModelConfig, spec: DataSpec):
        super().__init__(config, spec)
        self.blocks = nn.ModuleList(CRAMBlock(config, spec) for _ in range(config.n_layers))

    def forward(self, batch: dict, route: Route = Route(), diagnose_dense: bool = False
                ) -> ModelOutput:
        """Run the CRAM layers with route and return outputs with per-layer routing stats."""
        x = self.embed(batch)  # (B, T, d)
        layers = []
        if route.uniforms is None and route.working_keep is None:  # the trainer draws the
            route = self.with_route_noise(route, batch)  # noise before the call (torch.compile)
        uniforms = route.uniforms or (None,) * len(self.blocks)
        keeps = route.working_keep or (None,) * len(self.blocks)
        givens = route.choices or (None,) * len(self.blocks)
        if len(givens) != len(self.blocks):
            raise ConfigError(f"Route.choices: {len(givens)} layers' routes for a model with "
                              f"{len(self.blocks)} layers")
        for block, uniform, keep, given in zip(self.blocks, uniforms, keeps, givens, strict=True):
            x, stats = block(x, batch, route, diagnose_dense, uniform, keep, given)
            layers.append(stats)
        value_logits, signal_pred = self.heads(x)  # (B, T, V), (B, T)
        return ModelOutput(value_logits, signal_pred, layers)

    def with_route_noise(self, route: Route, batch: dict) -> Route:
        """``route`` with its noise drawn now from the route's generator.

        First every layer's Gumbel uniforms (``Route.with_uniforms``), then the working-memory
        dropout (``model.working_dropout``; training only, and with
        ``model.working_dropout_phase="warmup"`` only in the warm-up forward, a soft route forced
        to episodic memory). With no dropout nothing more is drawn, so the Gumbel stream is
        unchanged.
        """
        dtau = batch["dtau"]  # (B, T)
        route = route.with_uniforms(len(self.blocks), tuple(dtau.shape), dtau.device)
        p = self.config.working_dropout
        if p == 0 or not (self.training and route.soft) or self.blocks[0].working is None:
            return route
        if self.config.working_dropout_phase == "warmup" and route.force != "episodic":
            return route
        keep = tuple((torch.rand(dtau.shape[0], generator=route.generator, device=dtau.device)
                      >= p).float() / (1 - p) for _ in self.blocks)  # per layer (B,)
        return dataclasses.replace(route, working_keep=keep)
