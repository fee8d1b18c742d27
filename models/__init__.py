"""SRCD sequence models: CRAM, its ablations and the baselines, behind one registry.

``build_model(name, config, spec)`` builds any of ``MODEL_NAMES``. ``MODEL_VARIANTS`` holds, per
name, the one record of a variant: the class to build, the ``ModelConfig`` changes the name implies
(applied when a run's config is resolved, so config.json shows them), its ``TrainConfig`` changes
and, if token tasks cannot run it, why. The training changes are data here; the consolidation layer
(``cram.consolidation.config.VARIANTS``) checks their names against ``TrainConfig`` and applies
them.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from cram.core.errors import ConfigError

from .common import DataSpec, LayerStats, ModelConfig, ModelOutput, SRCDModel, token_spec
from .routing import HARD, Route, RoutingConfig
from .tiers import TIERS, Event, Tier

_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelConfig))


@dataclass(frozen=True)
class ModelVariant:
    """A registered model name: what to build and how it changes the preset's configs."""

    name: str
    description: str  # one line; docs/models.md lists it (a test keeps the two in step)
    module: str  # under cram.models
    cls: str
    changes: Mapping[str, object] = field(default_factory=dict)  # ModelConfig field → value
    train: Mapping[str, object] = field(default_factory=dict)  # TrainConfig field → value
    #   (names checked by cram.consolidation.config, which owns TrainConfig)
    token_refusal: str = ""  # why token tasks cannot run this model ("": they can)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.changes) - _CONFIG_FIELDS)
        if unknown:
            raise ConfigError(f"model variant {self.name!r}: unknown ModelConfig fields {unknown}")
        object.__setattr__(self, "changes", MappingProxyType(dict(self.changes)))
        object.__setattr__(self, "train", MappingProxyType(dict(self.train)))

    def apply(self, config: ModelConfig) -> ModelConfig:
        """``config`` with this variant's changes."""
        return dataclasses.replace(config, **self.changes)

    def build(self, config: ModelConfig, spec: DataSpec) -> SRCDModel:
        """Build this variant's model with its config changes applied."""
        klass = getattr(importlib.import_module(f"cram.models.{self.module}"), self.cls)
        return klass(config, spec)


_VARIANTS = (
    ModelVariant("cram", "CRAM: working + episodic + semantic tiers, learned router reading q̂",
                 "cram", "CRAM"),
    ModelVariant("cram-raw-q", "ablation: q and the consolidation loss in raw vector space "
                 "(the paper's form; router consistency off: it compares value-space readouts)",
                 "cram", "CRAM", {"q_space": "raw"}, train={"router_consistency_weight": 0.0}),
    ModelVariant("cram-oracle-q", "ablation: router reads the true q (the paper as written); "
                 "attends everywhere", "cram", "CRAM", {"router_reads": "q"}),
    ModelVariant("cram-static", "ablation: every query reads episodic memory, no other token does",
                 "cram", "CRAM", {"static_routing": True},
                 token_refusal="it routes by the query mask, which a token task never gives a "
                 "model (the oracle ablation exists on SRCD only)"),
    ModelVariant("cram-no-consolidation", "ablation: no consolidation loss", "cram", "CRAM",
                 train={"consolidation_weight": 0.0, "consolidation_raw_weight": 0.0}),
    ModelVariant("cram-logit-router", "ablation: router logits kept off saturation "
                 "(router_logit_weight 0.01); on the labelled presets also the log-odds router, "
                 "128-unit familiarity head and query-only gate that are CRAM's defaults since "
                 "issue 28", "cram", "CRAM", {"router_feature": "logit", "familiarity_hidden": 128},
                 train={"router_logit_weight": 0.01, "cost_gate": "familiarity-queries"}),
    # issue 15, the 2×2 of consolidation loss on/off × cost gated/ungated (with cram and
    # cram-no-consolidation), and the cost-matched baselines of `cram bench mechanism`
    ModelVariant("cram-ungated", "ablation (2×2): consolidation loss on, attention cost not gated "
                 "by q̂", "cram", "CRAM", train={"cost_gate": "none"}),
    ModelVariant("cram-no-consolidation-ungated", "ablation (2×2): no consolidation loss and the "
                 "attention cost not gated by q̂", "cram", "CRAM",
                 train={"consolidation_weight": 0.0, "consolidation_raw_weight": 0.0,
                        "cost_gate": "none"}),
    ModelVariant("seqboat-matched", "baseline: SeqBoat-style gate charged and trained like "
                 "CRAM (λ_q at queries, λ_n elsewhere, same schedule, sampled near-binary gates)",
                 "matched", "SeqBoatMatched"),
    ModelVariant("mod-matched", "baseline: Mixture-of-Depths at the novel-query floor "
                 "(capacity 1.5% of tokens per layer)", "mod", "MixtureOfDepths",
                 {"mod_capacity": 0.015}),
    ModelVariant("transformer", "baseline: dense causal Transformer", "transformer", "Transformer"),
    ModelVariant("sliding-window", "baseline: causal attention over the last attention_window "
                 "positions", "transformer", "SlidingWindowTransformer"),
    ModelVariant("ct-only", "baseline: CT-ODE working memory only, no attention",
                 "ct_only", "CTOnly"),
    ModelVariant("static-hybrid", "baseline: CT layers plus attention layers at a fixed ratio "
                 "(Jamba-style)", "hybrid", "StaticHybrid"),
    ModelVariant("mod", "baseline: Mixture-of-Depths top-k routing to attention with fixed "
                 "capacity", "mod", "MixtureOfDepths"),
    ModelVariant("seqboat", "baseline: SeqBoat-style learned per-token gate on attention, "
                 "no consolidation", "seqboat", "SeqBoat"),
)
MODEL_VARIANTS: dict[str, ModelVariant] = {v.name: v for v in _VARIANTS}
MODEL_NAMES = tuple(MODEL_VARIANTS)


def check_model_name(name: str) -> None:
    """Raise ConfigError listing the known names if name is not one."""
    if name not in MODEL_VARIANTS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")


def build_model(name: str, config: ModelConfig, spec: DataSpec) -> SRCDModel:
    """Build model ``name`` from an already-resolved config (variant changes applied)."""
    check_model_name(name)
    return MODEL_VARIANTS[name].build(config, spec)


__all__ = ["DataSpec", "Event", "HARD", "LayerStats", "ModelConfig", "ModelOutput",
           "ModelVariant", "MODEL_NAMES", "MODEL_VARIANTS", "Route", "RoutingConfig",
           "SRCDModel", "TIERS", "Tier", "build_model", "check_model_name", "token_spec"]
