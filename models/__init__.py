"""SRCD sequence models: CRAM, its ablations and the baselines, behind one registry.

``build_model(name, config, spec)`` builds any of ``MODEL_NAMES``; ``MODEL_VARIANTS`` holds the
config changes each name implies (applied when a run's config is resolved, so config.json shows
them).
"""

from __future__ import annotations

import importlib

from cram.core.errors import ConfigError

from .common import DataSpec, LayerStats, ModelConfig, ModelOutput, SRCDModel

#: name → (module, class, model-config changes, train-config changes, one-line description)
MODEL_VARIANTS: dict[str, tuple[str, str, dict, dict, str]] = {
    "cram": ("cram", "CRAM", {}, {}, "CRAM: working + episodic + semantic tiers, learned router reading q̂"),
    "cram-raw-q": ("cram", "CRAM", {"q_space": "raw"}, {},
                   "ablation: q and the consolidation loss in raw vector space (the paper's form)"),
    "cram-oracle-q": ("cram", "CRAM", {"router_reads": "q"}, {},
                      "ablation: router reads the true q (the paper as written); attends everywhere"),
    "cram-static": ("cram", "CRAM", {"static_routing": True}, {},
                    "ablation: every query reads episodic memory, no other token does"),
    "cram-no-consolidation": ("cram", "CRAM", {}, {"consolidation_weight": 0.0,
                                                    "consolidation_raw_weight": 0.0},
                              "ablation: no consolidation loss"),
    "cram-logit-router": ("cram", "CRAM", {"router_feature": "logit", "familiarity_hidden": 128},
                          {"router_logit_weight": 0.01, "cost_gate": "familiarity-queries"},
                          "CRAM for familiarity that must be learned (key vectors): the router reads "
                          "q̂'s log-odds and is kept off saturation; non-query tokens pay ungated"),
    "transformer": ("transformer", "Transformer", {}, {}, "baseline: dense causal Transformer"),
    "sliding-window": ("transformer", "SlidingWindowTransformer", {}, {},
                       "baseline: causal attention over the last attention_window positions"),
    "ct-only": ("ct_only", "CTOnly", {}, {}, "baseline: CT-ODE working memory only, no attention"),
    "static-hybrid": ("hybrid", "StaticHybrid", {}, {},
                      "baseline: CT layers plus attention layers at a fixed ratio (Jamba-style)"),
    "mod": ("mod", "MixtureOfDepths", {}, {},
            "baseline: Mixture-of-Depths top-k routing to attention with fixed capacity"),
    "seqboat": ("seqboat", "SeqBoat", {}, {},
                "baseline: SeqBoat-style learned per-token gate on attention, no consolidation"),
}
MODEL_NAMES = tuple(MODEL_VARIANTS)


def check_model_name(name: str) -> None:
    if name not in MODEL_VARIANTS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")


def build_model(name: str, config: ModelConfig, spec: DataSpec) -> SRCDModel:
    """Build model ``name`` from an already-resolved config (variant changes applied)."""
    check_model_name(name)
    module, cls, _, _, _ = MODEL_VARIANTS[name]
    klass = getattr(importlib.import_module(f"cram.models.{module}"), cls)
    return klass(config, spec)


__all__ = ["DataSpec", "LayerStats", "ModelConfig", "ModelOutput", "SRCDModel", "MODEL_NAMES",
           "MODEL_VARIANTS", "build_model", "check_model_name"]
