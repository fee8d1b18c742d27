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

Mode = Literal["soft", "hard"]
Force = Literal["none", "working", "episodic", "semantic", "no-episodic"]
TIERS = ("working", "episodic", "semantic")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of every SRCD model; fields a model does not use are ignored by it.

    The hybrid layout is data: ``attention_layers`` lists which layers carry attention in the static
    hybrid, and ``name`` picks the family (see ``cram.models.MODEL_NAMES``).
    """

    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 128  # feed-forward hidden width; 0 disables the FFN
    # working memory (CT-ODE) tier
    ct_dim: int = 64  # state width D of the CT scan
    ct_dt: float = 1.0  # Euler step Δt; the gate σ(W_τ log(1+Δτ)) scales it per channel
    ct_diagonal: bool = False  # diagonal W_1 (parallel over channels in the Triton kernel)
    # episodic tier
    attention_window: int | None = None  # episodic buffer B (keys j with pos-B < j <= pos); None = all
    # semantic tier + consolidation (CRAM)
    semantic_rank: int = 16  # rank r of the low-rank semantic MLP (paper: d/16)
    q_space: Literal["value", "raw"] = "value"  # where the consolidation score q is measured
    q_sigma: float = 1.0  # q = exp(-distance / q_sigma) (the "kl" score and raw space)
    q_value_score: Literal["kl", "agreement"] = "agreement"  # value-space q: the agreement
    #   Σ_v p_E(v)·p_S(v), the chance both readouts name the same value (low while they say
    #   nothing, so an untrained pair does not look consolidated); "kl": exp(-KL(p_E‖p_S)/σ)
    router_reads: Literal["qhat", "q"] = "qhat"  # "q": the paper as written (oracle q)
    router_feature: Literal["prob", "logit"] = "prob"  # what the router reads of q̂ (or q): the
    #   probability, or its log-odds (a scale on which a small router weight separates 0.7 from 0.2)
    router_episodic_bias: float = 2.0  # router initialised toward episodic memory
    static_routing: bool = False  # cram-static: queries read episodic memory, nothing else does
    familiarity_hidden: int = 32
    # baselines
    attention_layers: tuple[int, ...] = (1,)  # static hybrid: which layers are attention layers
    mod_capacity: float = 0.125  # Mixture-of-Depths: share of tokens per layer that attend
    seqboat_threshold: float = 0.5  # SeqBoat-style gate: attend where σ(gate) > threshold

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layers", "n_heads", "ct_dim", "familiarity_hidden"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"ModelConfig.{name}={v!r}: must be an integer >= 1")
        if self.d_model % self.n_heads:
            raise ConfigError(f"ModelConfig.d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if not isinstance(self.d_ff, int) or self.d_ff < 0:
            raise ConfigError(f"ModelConfig.d_ff={self.d_ff!r}: must be an integer >= 0")
        if not isinstance(self.semantic_rank, int) or self.semantic_rank < 1:
            raise ConfigError(f"ModelConfig.semantic_rank={self.semantic_rank!r}: rank must be >= 1")
        if self.attention_window is not None and self.attention_window < 1:
            raise ConfigError(f"ModelConfig.attention_window={self.attention_window!r}: buffer must be >= 1")
        if self.q_value_score not in ("kl", "agreement"):
            raise ConfigError(f"ModelConfig.q_value_score={self.q_value_score!r}: 'kl' or 'agreement'")
        if self.router_feature not in ("prob", "logit"):
            raise ConfigError(f"ModelConfig.router_feature={self.router_feature!r}: 'prob' or 'logit'")
        if self.q_space not in ("value", "raw"):
            raise ConfigError(f"ModelConfig.q_space={self.q_space!r}: 'value' or 'raw'")
        if not self.q_sigma > 0:
            raise ConfigError(f"ModelConfig.q_sigma={self.q_sigma!r}: must be > 0")
        if not self.ct_dt > 0:
            raise ConfigError(f"ModelConfig.ct_dt={self.ct_dt!r}: must be > 0")
        if not 0 < self.mod_capacity <= 1:
            raise ConfigError(f"ModelConfig.mod_capacity={self.mod_capacity!r}: must lie in (0, 1]")
        if any(not 0 <= i < self.n_layers for i in self.attention_layers):
            raise ConfigError(f"ModelConfig.attention_layers={self.attention_layers!r}: "
                              f"indices must lie in [0, {self.n_layers})")


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about its data (from ``SRCDConfig``); saved in checkpoints."""

    n_keys: int
    n_values: int
    key_encoding: str = "id"
    key_dim: int = 32


@dataclass
class LayerStats:
    """What one layer did with one batch; the trainer logs it and the consolidation losses read it.

    Tensors are ``None`` when the layer has no such tier. Shapes are (B, T) unless noted.
    """

    episodic: torch.Tensor  # (B, T) float: episodic weight (soft prob or 0/1 hard choice)
    computed: torch.Tensor  # (B, T) bool: attention was actually computed at this token
    choice: torch.Tensor | None = None  # (B, T) int64 hard choice (index into TIERS)
    r_episodic: torch.Tensor | None = None  # (B, T, d) episodic output (zeros where not computed)
    f_semantic: torch.Tensor | None = None  # (B, T, d) semantic output
    probe_episodic: torch.Tensor | None = None  # (B, T, V) value-probe logits of r_E (probe grads)
    probe_semantic: torch.Tensor | None = None  # (B, T, V) value-probe logits of f_sem (probe frozen)
    q: torch.Tensor | None = None  # (B, T) consolidation score (valid where computed)
    q_space: str = "value"  # where q and the consolidation loss are measured
    qhat: torch.Tensor | None = None  # (B, T) familiarity prediction
    logits: torch.Tensor | None = None  # (B, T, 3) router logits over TIERS (CRAM)
    extra: dict = field(default_factory=dict)  # model-specific auxiliary tensors


@dataclass
class ModelOutput:
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


class SRCDHeads(nn.Module):
    """Value readout (at queries) and next-signal prediction (everywhere)."""

    def __init__(self, spec: DataSpec, d_model: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.value = nn.Linear(d_model, spec.n_values)
        self.signal = nn.Linear(d_model, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.norm(x)  # (B, T, d)
        return self.value(h), self.signal(h).squeeze(-1)  # (B, T, V), (B, T)


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.up = nn.Linear(d_model, d_ff)
        self.down = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class SRCDModel(nn.Module):
    """Base class: owns the embedding and the heads; subclasses define ``blocks``.

    ``forward(batch, mode="soft"|"hard", temperature=1.0, force="none", generator=None)``;
    baselines ignore the routing arguments they do not use.
    """

    family: str = "base"
    #: routes each token among working/episodic/semantic memory and accepts force="episodic"
    #: (the trainer forces episodic routing in warm-up and logs patterns and the transition)
    tiered_routing: bool = False

    def __init__(self, config: ModelConfig, spec: DataSpec):
        super().__init__()
        self.config = config
        self.spec = spec
        self.embed = SRCDEmbedding(spec, config.d_model)
        self.heads = SRCDHeads(spec, config.d_model)

    def model_args(self) -> dict:
        """Everything needed to rebuild this model (saved in checkpoints)."""
        return {"config": dataclasses.asdict(self.config), "spec": dataclasses.asdict(self.spec)}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
