"""CRAM's routing switches as one typed config, and the route spec every forward pass takes.

``RoutingConfig`` groups the architecture switches of the CRAM layer (how q is scored, what the
router reads, whether routing is learned at all). ``Route`` is the per-call request: soft (training,
Gumbel-softmax) or hard (evaluation, argmax) routing, its temperature, an optional forced tier and
the generator of the Gumbel noise. Every field is a ``Literal`` checked when the object is built, so
a misspelt switch fails up front naming the field.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Literal

import torch

from cram.core.errors import ConfigError

from .tiers import TIERS, Tier

QSpace = Literal["value", "raw"]  # where q and the consolidation loss are measured
QValueScore = Literal["kl", "agreement"]  # value-space q: exp(-KL/σ) or Σ_v p_E·p_S
RouterReads = Literal["qhat", "q"]  # "q": the oracle (the paper as written); needs dense attention
RouterFeature = Literal["prob", "logit"]  # the router reads q̂ (or q) or its log-odds
Mode = Literal["soft", "hard"]
Force = Literal["none", "working", "episodic", "semantic", "no-episodic"]
Ablate = Literal["none", "semantic"]  # evaluation only: a tier's output is zeroed


def check_literals(obj: object) -> None:
    """Raise ``ConfigError`` naming the first ``Literal``-typed field of ``obj`` out of its set."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        choices = typing.get_args(hints[f.name]) if typing.get_origin(hints[f.name]) is Literal \
            else None
        value = getattr(obj, f.name)
        if choices and value not in choices:
            raise ConfigError(f"{type(obj).__name__}.{f.name}={value!r}: choose one of "
                              + ", ".join(repr(c) for c in choices))


@dataclass(frozen=True)
class RoutingConfig:
    """The CRAM layer's routing switches (``ModelConfig.routing``).

    The fields keep their flat names in ``ModelConfig`` (config.json, checkpoints and
    ``--set model.q_space=raw`` read them there); this object is the one typed, validated view
    the layer reads.
    """

    q_space: QSpace = "value"
    q_value_score: QValueScore = "agreement"
    router_reads: RouterReads = "qhat"
    router_feature: RouterFeature = "logit"
    static_routing: bool = False  # queries read episodic memory, nothing else does (cram-static)

    def __post_init__(self) -> None:
        check_literals(self)
        if not isinstance(self.static_routing, bool):
            raise ConfigError(f"RoutingConfig.static_routing={self.static_routing!r}: "
                              "true or false")

    @property
    def oracle(self) -> bool:
        """The router reads the true q, so attention must be computed for every token."""
        return self.router_reads == "q"


@dataclass(frozen=True, eq=False)
class Route:
    """How one forward pass routes: ``Route()`` is soft routing at temperature 1.

    ``force`` overrides the router: a tier name sends every token there, ``"no-episodic"`` keeps
    the router's choice but turns episodic reads into working ones. ``ablate="semantic"`` (hard
    routing only) keeps the choice and zeroes the semantic tier's output: ``cram bench mechanism``
    asks whether library answers need it. ``Route("hard", force="episodic")`` is attention
    computed and read at every token (the forced-dense reference). ``generator`` draws the
    Gumbel noise of soft routing (a seed argument; ``None``: the global generator).
    ``uniforms`` (one (B, T, 3) fp32 tensor per layer, from :meth:`with_uniforms`) is that noise
    drawn before the forward pass, so a compiled model meets no generator (a graph break).
    ``working_keep`` (one (B,) tensor per layer) is the working-memory dropout drawn the same way
    (``model.working_dropout``; soft routes of a model in training mode only).
    ``choices`` (one (B, T) int64 tensor per layer) replaces the router's hard choice with
    given routes, e.g. another run's on the same batch: which tokens attend is then held fixed
    while the weights differ (evaluation only; ``ablate`` still applies).
    """

    mode: Mode = "soft"
    temperature: float = 1.0
    force: Force = "none"
    generator: torch.Generator | None = None
    ablate: Ablate = "none"  # "semantic": the router's choice is kept, f_sem is added as zeros
    uniforms: tuple[torch.Tensor, ...] | None = None  # per layer (B, T, 3) fp32 in [0, 1)
    working_keep: tuple[torch.Tensor, ...] | None = None  # per layer (B,): 0 drops a sequence's
    #   working-memory output, 1/(1-p) keeps it (``model.working_dropout``, training only)
    attention_budget: float | None = None  # evaluation only: at most this share of a batch's
    #   tokens read attention in each layer (``cap_attention``); None: no cap
    choices: tuple[torch.Tensor, ...] | None = None  # evaluation only: each layer's tier
    #   choice (B, T) int64, given from outside (another model's routes on the same batch,
    #   ``cram eval --routes-of``); the router's own choice is not used

    def __post_init__(self) -> None:
        check_literals(self)
        if not self.temperature > 0:
            raise ConfigError(f"Route.temperature={self.temperature!r}: must be > 0")
        if self.ablate != "none" and self.soft:
            raise ConfigError(f"Route.ablate={self.ablate!r}: an evaluation-only ablation; "
                              "use mode='hard'")
        if self.attention_budget is not None:
            if self.soft or self.force != "none":
                raise ConfigError(f"Route.attention_budget={self.attention_budget!r}: caps the "
                                  "router's own hard choice; use mode='hard' and force='none'")
            if not 0.0 <= self.attention_budget <= 1.0:
                raise ConfigError(f"Route.attention_budget={self.attention_budget!r}: a share "
                                  "of tokens, must be in [0, 1]")
        if self.choices is not None and (self.soft or self.force != "none"
                                         or self.attention_budget is not None):
            raise ConfigError("Route.choices: given routes replace the router's hard choice; "
                              "use mode='hard', force='none' and no attention_budget")

    @property
    def semantic_off(self) -> bool:
        """The semantic tier's output is zeroed (tokens routed there get working memory only)."""
        return self.ablate == "semantic"

    @property
    def soft(self) -> bool:
        """Whether this route mixes tiers softly (training) rather than choosing one (hard)."""
        return self.mode == "soft"

    @property
    def samples(self) -> bool:
        """Gumbel noise is drawn: soft routing where the router's choice is kept."""
        return self.soft and self.force in ("none", "no-episodic")

    def with_uniforms(self, n_layers: int, shape: tuple[int, int], device: torch.device
                      ) -> Route:
        """The route with each layer's Gumbel uniforms (B, T, 3) drawn now from ``generator``.

        Drawn in layer order and shape as the layers would draw them, so on CPU (fp32 router
        logits) the noise is the same number for number. A route that does not sample: itself.
        """
        if not self.samples:
            return self
        draws = tuple(torch.rand((*shape, 3), generator=self.generator, device=device)
                      for _ in range(n_layers))
        return dataclasses.replace(self, uniforms=draws)

    @property
    def mixes(self) -> bool:
        """The layer output mixes the tiers by probability (else by the 0/1 choice)."""
        return self.soft and self.force == "none"

    @property
    def attention_off(self) -> bool:
        """A tier other than episodic is forced: no token reads attention."""
        return self.force in ("working", "semantic", "no-episodic")

    def apply_force(self, choice: torch.Tensor) -> torch.Tensor:
        """The router's choice (B, T) int64 after ``force`` (B, T)."""
        if self.force == "no-episodic":  # episodic memory switched off: those tokens stay working
            return torch.where(choice == Tier.EPISODIC, int(Tier.WORKING), choice)
        if self.force != "none":
            return torch.full_like(choice, TIERS.index(self.force))
        return choice

    def cap_attention(self, choice: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The hard choice (B, T) with at most ``attention_budget`` × B × T tokens episodic.

        The budget is the batch's, like attention per token is an average: among the tokens the
        router sent to attention, those with the largest episodic margin (episodic logit minus
        the best other logit, ``logits`` (B, T, 3)) keep it, wherever they are in the batch; the
        others go to the better of working and semantic memory. A cap, never a quota: no token
        is sent to attention that the router did not send. The ranking sees the whole batch at
        once, so the allocation is the best the router's own scores allow, not a causal one.
        """
        if self.attention_budget is None:
            return choice
        episodic = (choice == Tier.EPISODIC).flatten()  # (B·T,)
        flat = logits.detach().flatten(0, 1)  # (B·T, 3)
        others = flat.clone()
        others[:, Tier.EPISODIC] = float("-inf")
        best_other, fallback = others.max(-1)  # (B·T,) each
        margin = (flat[:, Tier.EPISODIC] - best_other).masked_fill(~episodic, float("-inf"))
        keep = torch.zeros_like(episodic)
        k = int(self.attention_budget * choice.numel())  # a share in [0, 1]: k <= B·T
        if k > 0:
            keep[margin.topk(k).indices] = True
        capped = torch.where(episodic & ~keep, fallback, choice.flatten())
        return capped.view_as(choice)


HARD = Route("hard")
