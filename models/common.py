"""Pieces every SRCD model shares: the config, the input embedding, the heads and the output type.

Read top to bottom: ``ModelConfig`` → ``SRCDEmbedding`` → ``SRCDHeads`` → ``LayerStats`` /
``ModelOutput`` → ``SRCDModel`` (the base class that owns embedding and heads).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from cram.core.errors import ConfigError
from cram.core.fields import check_fields, config_field

from .routing import QSpace, QValueScore, Route, RouterFeature, RouterReads, RoutingConfig


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of every SRCD model; fields a model does not use are ignored by it.

    The model name (``cram.models.MODEL_NAMES``) picks the class and its changes to these fields.
    The hybrid layout is data: ``attention_layers`` lists which layers carry attention in the
    static hybrid. CRAM's routing switches are grouped and validated as ``routing``.
    """

    d_model: int = config_field(64, min=1)
    n_layers: int = config_field(2, min=1)
    n_heads: int = config_field(4, min=1)
    d_ff: int = config_field(128, min=0)  # feed-forward hidden width; 0 disables the FFN
    # working memory (CT-ODE) tier
    ct_dim: int = config_field(64, min=1)  # state width D of the CT scan
    ct_dt: float = config_field(1.0, gt=0)  # Euler step Δt; the gate σ(W_τ log(1+Δτ)) scales
    #   it per channel
    ct_diagonal: bool = False  # diagonal W_1 (parallel over channels in the Triton kernel)
    working_layout: Literal["serial", "parallel", "off"] = "serial"  # issue 32: "serial"
    #   (default): the CT-ODE output joins the residual before the other tiers read it;
    #   "parallel": the tiers read the layer's input and the CT-ODE output joins beside them;
    #   "off": no working-memory tier (an ablation). Without dropout (below) plain MQAR is
    #   learned only without the serial CT-ODE in front of attention (docs/baselines.md)
    working_dropout: float = config_field(0.25, min=0, lt=1)  # issue 32 (default since
    #   2026-12-07; 0 before): in training, each layer drops the CT-ODE output of a whole
    #   sequence with this probability (the kept ones scaled by 1/(1-p)); 0: never. Breaks the
    #   co-adaptation that keeps attention from learning recall behind the working memory
    working_dropout_phase: Literal["always", "warmup"] = "warmup"  # issue 32: when that
    #   dropout applies: only in the routing warm-up (the soft forward forced to episodic
    #   memory), so attention learns recall and the CT-ODE is whole after it; or every step
    # episodic tier
    attention_window: int | None = config_field(None, min=1)  # episodic buffer B: keys j,
    #   pos-B < j <= pos; None: all
    attention_rope: bool = False  # issue 32: rotary position embedding of queries and keys in
    #   every attention layer (relative positions inside attention; the embedding's absolute
    #   position features stay)
    # semantic tier + consolidation (CRAM)
    semantic_rank: int = config_field(16, min=1)  # rank r of the low-rank semantic MLP
    #   (paper: d/16)
    # routing switches (typed and validated as ``RoutingConfig``; read them as ``.routing``)
    q_space: QSpace = "value"  # where the consolidation score q is measured
    q_sigma: float = config_field(1.0, gt=0)  # q = exp(-distance / q_sigma) (the "kl" score
    #   and raw space)
    q_value_score: QValueScore = "agreement"  # value-space q: the agreement
    #   Σ_v p_E(v)·p_S(v), the chance both readouts name the same value (low while they say
    #   nothing, so an untrained pair does not look consolidated); "kl": exp(-KL(p_E‖p_S)/σ)
    router_reads: RouterReads = "qhat"  # "q": the paper as written (oracle q)
    router_feature: RouterFeature = "logit"  # what the router reads of q̂ (or q): its
    #   log-odds (default since issue 28, 2026-12-07: a scale on which a small router weight
    #   separates 0.7 from 0.2, so the router can wait for familiarity learned from key vectors)
    #   or the probability ("prob", the paper's form and the default before)
    router_episodic_bias: float = 2.0  # router initialised toward episodic memory
    static_routing: bool = False  # cram-static: queries read episodic memory, nothing else does
    familiarity_hidden: int = config_field(128, min=1)  # width of the familiarity head's hidden
    #   layer (128 since issue 28, 2026-12-07; 32 before: too narrow for q̂ from key vectors)
    # baselines
    attention_layers: tuple[int, ...] = (1,)  # static hybrid: which layers are attention layers
    mod_capacity: float = config_field(0.125, gt=0, max=1)  # Mixture-of-Depths: share of
    #   tokens per layer that attend
    seqboat_threshold: float = 0.5  # SeqBoat-style gate: attend where σ(gate) > threshold

    def __post_init__(self) -> None:
        check_fields(self)  # types, bounds and the routing switches' Literal sets
        if self.d_model % self.n_heads:
            raise ConfigError(f"ModelConfig.d_model={self.d_model} must be divisible by "
                              f"n_heads={self.n_heads}")
        if any(not 0 <= i < self.n_layers for i in self.attention_layers):
            raise ConfigError(f"ModelConfig.attention_layers={self.attention_layers!r}: "
                              f"indices must lie in [0, {self.n_layers})")

    @property
    def routing(self) -> RoutingConfig:
        """The routing switches as one typed, validated object."""
        return RoutingConfig(**{f.name: getattr(self, f.name)
                                for f in dataclasses.fields(RoutingConfig)})


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about its data; saved in checkpoints.

    SRCD (``vocab_size == 0``, the default, so old checkpoints rebuild): sizes from ``SRCDConfig``.
    A token task (``vocab_size > 0``, see :func:`token_spec`): the model reads ``tokens`` (and
    ``dtau``) through a :class:`TokenEmbedding`, and its value head spans the vocabulary
    (``n_values == vocab_size``).
    """

    n_keys: int
    n_values: int
    key_encoding: str = "id"
    key_dim: int = 32
    vocab_size: int = 0  # > 0: a token task with this vocabulary

    @property
    def encoding(self) -> str:
        """The model input's encoding: ``"tokens"`` (a vocabulary) or ``"srcd"`` (events and keys).

        It picks the embedding (``EMBEDDINGS``) and matches a task's ``encoding``.
        """
        return "tokens" if self.vocab_size > 0 else "srcd"


def token_spec(vocab_size: int) -> DataSpec:
    """The data spec of a token task: no SRCD keys; the value head is the vocabulary head."""
    return DataSpec(n_keys=0, n_values=vocab_size, vocab_size=vocab_size)


@dataclass
class LayerStats:
    """What one layer did with one batch; the trainer logs it and the consolidation losses read it.

    Tensors are ``None`` when the layer has no such tier. Shapes are (B, T) unless noted.
    """

    episodic: torch.Tensor  # (B, T) float: episodic weight (soft prob or 0/1 hard choice)
    computed: torch.Tensor  # (B, T) bool: attention was actually computed at this token
    choice: torch.Tensor | None = None  # (B, T) int64 hard choice (a ``Tier``)
    r_episodic: torch.Tensor | None = None  # (B, T, d) dense episodic output (every token)
    f_semantic: torch.Tensor | None = None  # (B, T, d) semantic output
    probe_episodic: torch.Tensor | None = None  # (B, T, V) value-probe logits of r_E (probe grads)
    probe_semantic: torch.Tensor | None = None  # (B, T, V) probe logits of f_sem (probe frozen)
    q: torch.Tensor | None = None  # (B, T) consolidation score (valid where computed)
    q_space: QSpace = "value"  # where q and the consolidation loss are measured
    qhat: torch.Tensor | None = None  # (B, T) familiarity prediction
    logits: torch.Tensor | None = None  # (B, T, 3) router logits over the tiers (CRAM)
    extra: dict = field(default_factory=dict)  # model-specific auxiliary tensors


@dataclass
class ModelOutput:
    """What every model returns: value logits, next-signal prediction, per-layer routing stats."""

    value_logits: torch.Tensor  # (B, T, V)
    signal_pred: torch.Tensor  # (B, T)
    layers: list[LayerStats]
    aux_loss: torch.Tensor | None = None  # model-specific loss already weighted (e.g. MoD router)


class SRCDEmbedding(nn.Module):
    """Sum of embeddings of everything a position carries. x: (B, T, d)."""

    def __init__(self, spec: DataSpec, d_model: int):
        super().__init__()
        self.spec = spec
        self.d_model = d_model
        self.event = nn.Embedding(3, d_model)
        if spec.key_encoding == "vector":
            self.key = nn.Linear(spec.key_dim, d_model, bias=False)
        else:
            self.key = nn.Embedding(spec.n_keys, d_model)
        self.value = nn.Embedding(spec.n_values + 1, d_model)  # 0 = no value
        self.continuous = nn.Linear(2, d_model)  # [signal, log(1+Δτ)]
        self.time = nn.Linear(16, d_model, bias=False)  # sinusoidal features of elapsed time

    def forward(self, batch: dict) -> torch.Tensor:  # (B, T, d)
        """Embed key ids (or key vectors), values, events and time gaps into (B, T, d)."""
        dtau = batch["dtau"]  # (B, T)
        x = self.event(batch["event"]) + self.value(batch["value_in"])
        if self.spec.key_encoding == "vector":
            x = x + self.key(batch["key_vec"])
        else:
            x = x + self.key(batch["key"])
        cont = torch.stack([batch["signal"], torch.log1p(dtau)], dim=-1)  # (B, T, 2)
        x = x + self.continuous(cont)
        elapsed = torch.cumsum(dtau, dim=1)  # (B, T) continuous time τ_t
        freqs = torch.exp(torch.linspace(math.log(0.05), math.log(20.0), 8, device=dtau.device))
        angles = elapsed[..., None] * freqs  # (B, T, 8)
        return x + self.time(torch.cat([angles.sin(), angles.cos()], dim=-1))


class TokenEmbedding(nn.Module):
    """Token task input: token embedding + position-index features + a log(1+Δτ) feature.

    Reads only ``batch["tokens"]`` and ``batch["dtau"]``; which positions are queries (the loss
    mask) is never an input. The positional signal is sinusoidal features of the position index
    (periods 2π to 2π·10⁴ positions) through a linear map, so it does not depend on Δτ; Δτ enters
    only as its own feature (a constant when a task gives no Δτ). x: (B, T, d).
    """

    n_freqs = 16

    def __init__(self, spec: DataSpec, d_model: int):
        super().__init__()
        self.spec = spec
        self.d_model = d_model
        self.token = nn.Embedding(spec.vocab_size, d_model)
        self.position = nn.Linear(2 * self.n_freqs, d_model, bias=False)
        self.gap = nn.Linear(1, d_model)  # log(1+Δτ)

    def forward(self, batch: dict) -> torch.Tensor:  # (B, T, d)
        """Embed tokens with position-index features and a log(1 + dtau) feature into (B, T, d)."""
        tokens, dtau = batch["tokens"], batch["dtau"]  # (B, T) int64, (B, T) float
        pos = torch.arange(tokens.shape[1], device=tokens.device, dtype=torch.float32)  # (T,)
        freqs = torch.exp(-torch.linspace(0.0, math.log(1e4), self.n_freqs, device=pos.device))
        angles = pos[:, None] * freqs  # (T, F)
        features = torch.cat([angles.sin(), angles.cos()], dim=-1)  # (T, 2F)
        x = self.token(tokens) + self.position(features)[None]
        return x + self.gap(torch.log1p(dtau.float())[..., None])


#: the embedding of each input encoding (``DataSpec.encoding``)
EMBEDDINGS = {"srcd": SRCDEmbedding, "tokens": TokenEmbedding}


class SRCDHeads(nn.Module):
    """Value readout (at queries) and next-signal prediction (everywhere)."""

    def __init__(self, spec: DataSpec, d_model: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.value = nn.Linear(d_model, spec.n_values)
        self.signal = nn.Linear(d_model, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Read out value logits and the next-signal prediction from the final hidden state."""
        h = self.norm(x)  # (B, T, d)
        return self.value(h), self.signal(h).squeeze(-1)  # (B, T, V), (B, T)


class FeedForward(nn.Module):
    """Position-wise two-layer MLP with GELU."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.up = nn.Linear(d_model, d_ff)
        self.down = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the MLP to every position."""
        return self.down(F.gelu(self.up(x)))


class SRCDModel(nn.Module):
    """Base class of every model family: owns the embedding and the heads.

    Subclasses define ``blocks`` and ``forward(batch, route=Route(), diagnose_dense=False) ->
    ModelOutput``.

    Baselines ignore the parts of the ``Route`` they do not use. ``diagnose_dense=True`` asks a
    model with a consolidation score to compute dense attention for every token as a diagnostic
    (q and the probe readouts in ``LayerStats``); it never changes the output or ``computed``.
    """

    family: str = "base"
    #: the model has a semantic tier trained by consolidation and a learned router: the trainer
    #: forces episodic routing in warm-up, the evaluator measures forced-tier accuracy and q
    consolidates: bool = False
    #: the model's attention is charged by the training config's cost (a cost-matched baseline,
    #: :mod:`cram.models.matched`): the routing schedule's criterion is measured on it too, so its
    #: cost starts where its own retrieval is learned, as CRAM's does (CRAM models: implied)
    follows_routing_schedule: bool = False

    def __init__(self, config: ModelConfig, spec: DataSpec):
        super().__init__()
        self.config = config
        self.spec = spec
        self.embed = EMBEDDINGS[spec.encoding](spec, config.d_model)
        self.heads = SRCDHeads(spec, config.d_model)

    def with_route_noise(self, route: Route, batch: dict) -> Route:
        """``route`` with any noise the forward pass would draw drawn now (none here)."""
        return route

    def model_args(self) -> dict:
        """Everything needed to rebuild this model (saved in checkpoints)."""
        return {"config": dataclasses.asdict(self.config), "spec": dataclasses.asdict(self.spec)}

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters())
