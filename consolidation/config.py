"""Experiment configs: frozen dataclasses for data, model and training, and the named presets.

Overrides go through ``dataclasses.replace`` (``cram ... --set train.steps=100``); every field is
checked when the dataclass is built, so configs that cannot work fail up front, naming the field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from cram.core.errors import ConfigError
from cram.models import MODEL_VARIANTS, ModelConfig, ModelVariant, check_model_name
from cram.tasks.srcd_stream import SRCDConfig


@dataclass(frozen=True)
class TrainConfig:
    """Training fields: steps, batch, optimiser, the routing schedule and the loss weights."""

    steps: int = 700
    batch_size: int = 32  # global batch (split across DDP ranks)
    data_shards: int = 1  # single process: draw the global batch as this many rank streams, so it
    #                       sees exactly the data of a DDP run with that many ranks
    lr: float = 3e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    lr_warmup_steps: int = 30  # linear learning-rate warm-up
    # routing schedule (CRAM family)
    warmup_steps: int = 150  # routing forced to episodic memory; the γ fits' onset
    tau_start: float = 1.0  # Gumbel-softmax temperature right after warm-up ...
    tau_end: float = 0.2  # ... annealed geometrically to this
    tau_anneal_steps: int = 200
    # issue 13: "learned" (default) = warm-up ends when the retrieval criterion is met
    # (consolidation/routing_schedule.py), at the latest after max_fraction·steps, and the cost
    # ramps in from there; "fixed" = warm-up and ramp at the step counts above (a schedule tuned
    # to one task and length: `cram bench schedule` compares the two)
    schedule: Literal["fixed", "learned"] = "learned"
    schedule_criterion: Literal["retrieval", "accuracy"] = "retrieval"
    schedule_threshold: float = 0.9  # criterion value that ends a learned warm-up
    schedule_horizon: int = 20  # EMA horizon of the criterion, in steps (also its minimum wait)
    schedule_max_fraction: float = 0.5  # base maximum learned warm-up, share of train.steps ...
    schedule_extend_fraction: float = 0.8  # ... extended up to this share while the signal rises
    schedule_min_rise: float = 0.02  # "rising": gained this much over the last horizon updates
    schedule_signal: bool = False  # fixed schedule: also measure the criterion in warm-up, for
    #   the log (one extra no-grad forward per warm-up step; a learned schedule always does)
    # loss weights
    signal_weight: float = 1.0  # next-signal MSE
    consolidation_weight: float = 1.0  # semantic → stop-grad episodic, in q's space
    consolidation_raw_weight: float = 0.1  # extra raw-vector term (keeps downstream inputs alike)
    familiarity_weight: float = 1.0  # q̂ regression toward q
    probe_weight: float = 1.0  # value probe on r_E (defines value-space q)
    familiarity_scope: Literal["all", "retrieving"] = "all"  # issue 13: "retrieving" = a layer's
    #   consolidation / familiarity targets count a token only where no lower layer attended
    cost_query: float = 2.0  # λ on the expected episodic share of query tokens
    cost_nonquery: float = 0.5  # λ on the expected episodic share of other tokens
    cost_ramp_steps: int = 100  # λ ramps linearly from 0 after warm-up
    router_logit_weight: float = 0.0  # penalty on the router's centred squared logits (query and
    #   non-query tokens averaged apart): keeps the router off saturation, where no cost moves it
    router_consistency_weight: float = 0.0  # after warm-up, at query tokens (labelled or not):
    #   the expected distance, in the value probe's readout, of the working and semantic tiers'
    #   outputs from the stop-grad episodic readout, weighted by the router's softmax over those
    #   two logits: teaches which non-attention tier reproduces what attention would fetch where
    #   no label says it (the attention share stays the cost's)
    cost_gate: Literal["none", "familiarity", "familiarity-queries"] = "familiarity"
    #   each token's cost is scaled by its stop-grad q̂: attention is charged only where the
    #   model predicts consolidation; "none": the ungated cost;
    #   "familiarity-queries": query tokens gated, non-query tokens (no binding) charged ungated
    # logging and evaluation
    log_every: int = 25
    eval_sequences: int = 64
    eval_batch_size: int = 32
    eval_seed: int = 10_000
    pattern_every: int = 50
    retention_stages: int = 3  # retention curves at warm-up end plus this many evenly spaced steps
    checkpoint_every: int = 50
    threads: int = 1  # torch intra-op threads on CPU
    prefetch: int = 2  # batches drawn this many steps ahead (0: in the loop; issue 16) ...
    data_worker: Literal["auto", "thread", "process"] = "auto"  # ... in a background thread or
    #   one worker process (no GIL time taken from the loop); auto: a process on CUDA, else a
    #   thread (consolidation/batches.py). Any choice gives the same batches, bit for bit
    compile: bool = False  # torch.compile the training forward (not evaluation); the scans are
    #   custom ops and the Gumbel noise is drawn before the forward, so a CRAM model is one graph
    device: str = "auto"  # auto: CUDA (with AMP) if present, then MPS, else CPU

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "data_shards", "log_every", "eval_sequences",
                     "eval_batch_size", "pattern_every", "checkpoint_every", "threads"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"TrainConfig.{name}={v!r}: must be an integer >= 1")
        for name in ("warmup_steps", "lr_warmup_steps", "tau_anneal_steps", "cost_ramp_steps",
                     "retention_stages", "prefetch", "eval_seed"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ConfigError(f"TrainConfig.{name}={v!r}: must be an integer >= 0")
        if not self.lr > 0:
            raise ConfigError(f"TrainConfig.lr={self.lr!r}: must be > 0")
        if not (self.tau_start > 0 and self.tau_end > 0):
            raise ConfigError(f"TrainConfig.tau_start/tau_end: a temperature must be > 0 "
                              f"(got {self.tau_start}, {self.tau_end})")
        for name in ("signal_weight", "consolidation_weight", "consolidation_raw_weight",
                     "familiarity_weight", "probe_weight", "cost_query", "cost_nonquery",
                     "router_logit_weight", "router_consistency_weight", "weight_decay",
                     "grad_clip"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v >= 0):
                raise ConfigError(f"TrainConfig.{name}={v!r}: must be a number >= 0")
        if self.cost_gate not in ("none", "familiarity", "familiarity-queries"):
            raise ConfigError(f"TrainConfig.cost_gate={self.cost_gate!r}: 'none', 'familiarity' "
                              "or 'familiarity-queries'")
        if self.familiarity_scope not in ("all", "retrieving"):
            raise ConfigError(f"TrainConfig.familiarity_scope={self.familiarity_scope!r}: "
                              "'all' or 'retrieving'")
        if not isinstance(self.compile, bool):
            raise ConfigError(f"TrainConfig.compile={self.compile!r}: true or false")
        if self.data_worker not in ("auto", "thread", "process"):
            raise ConfigError(f"TrainConfig.data_worker={self.data_worker!r}: 'auto', 'thread' "
                              "or 'process'")
        if self.schedule not in ("fixed", "learned"):
            raise ConfigError(f"TrainConfig.schedule={self.schedule!r}: 'fixed' or 'learned'")
        if self.schedule_criterion not in ("retrieval", "accuracy"):
            raise ConfigError(f"TrainConfig.schedule_criterion={self.schedule_criterion!r}: "
                              "'retrieval' or 'accuracy'")
        if not all(0 <= x <= 1 for x in (self.schedule_threshold, self.schedule_max_fraction,
                                         self.schedule_extend_fraction, self.schedule_min_rise)):
            raise ConfigError(f"TrainConfig.schedule_threshold={self.schedule_threshold!r} / "
                              f"schedule_max_fraction={self.schedule_max_fraction!r} / "
                              f"schedule_extend_fraction={self.schedule_extend_fraction!r} / "
                              f"schedule_min_rise={self.schedule_min_rise!r}: must be in [0, 1]")
        if not isinstance(self.schedule_horizon, int) or self.schedule_horizon < 1:
            raise ConfigError(f"TrainConfig.schedule_horizon={self.schedule_horizon!r}: "
                              "must be an integer >= 1")
        if (self.device not in ("auto", "cpu", "cuda", "mps")
                and not self.device.startswith("cuda:")):
            raise ConfigError(f"TrainConfig.device={self.device!r}: auto, cpu, cuda[:N] or mps")

    def temperature(self, step: int) -> float:
        """Gumbel temperature at ``step``: tau_start after warm-up, geometric decay to tau_end."""
        after = max(step - self.warmup_steps, 0)
        frac = min(after / self.tau_anneal_steps, 1.0) if self.tau_anneal_steps else 1.0
        return float(self.tau_start * (self.tau_end / self.tau_start) ** frac)

    def cost_scale(self, step: int) -> float:
        """Multiplier of the cost weights: 0 in warm-up, then a linear ramp to 1."""
        if step < self.warmup_steps:
            return 0.0
        if not self.cost_ramp_steps:
            return 1.0
        return min((step - self.warmup_steps + 1) / self.cost_ramp_steps, 1.0)


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole run's config: the data (SRCD), the model and the training fields."""

    data: SRCDConfig = field(default_factory=SRCDConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        if self.train.router_consistency_weight and self.model.q_space != "value":
            raise ConfigError("train.router_consistency_weight needs model.q_space=value (it "
                              "compares tiers in the value probe's readout), got "
                              f"{self.model.q_space!r}")

    def to_dict(self) -> dict:
        """The config as plain dicts (config.json and checkpoints)."""
        return {"data": dataclasses.asdict(self.data),
                "model_config": dataclasses.asdict(self.model),
                "train": dataclasses.asdict(self.train)}

    @classmethod
    def from_dict(cls, d: dict, source: str = "config.json") -> "ExperimentConfig":
        """Rebuild a config from config.json or a checkpoint's record.

        Fields left out take their defaults (older runs); ``source`` names the file in errors.

        Raises
        ------
        ConfigError
            One line naming ``source`` and the field: a section that is not an object, an
            unknown field, a value of the wrong type (checked against the dataclass's type
            hints before the dataclass is built) or out of range.
        """
        import types
        import typing

        def expected(hint, value) -> str | None:  # what ``value`` should be, None if it is
            origin, args = typing.get_origin(hint), typing.get_args(hint)
            if hint is bool:
                return None if isinstance(value, bool) else "true or false"
            if hint in (int, float):
                ok = isinstance(value, (int, float) if hint is float else int)
                return None if ok and not isinstance(value, bool) else (
                    "a number" if hint is float else "an integer")
            if hint is str:
                return None if isinstance(value, str) else "a string"
            if origin is Literal:
                ok = any(type(value) is type(a) and value == a for a in args)
                return None if ok else f"one of {list(args)}"
            if origin in (typing.Union, types.UnionType):
                if value is None and type(None) in args:
                    return None
                wants = [expected(a, value) for a in args if a is not type(None)]
                return None if None in wants else " or ".join([*wants, "null"])
            if origin in (tuple, list):
                ok = isinstance(value, (list, tuple)) and all(
                    expected(args[0], v) is None for v in value)
                return None if ok else ("a list of integers" if args[0] is int else "a list")
            return None  # a type checked by the dataclass itself

        if not isinstance(d, Mapping):
            raise ConfigError(f"{source}: expected a JSON object, got {type(d).__name__}")
        parts = []
        for key, klass in (("data", SRCDConfig), ("model_config", ModelConfig),
                           ("train", TrainConfig)):
            if key not in d:
                raise ConfigError(f"{source}: no {key!r} section")
            section = d[key]
            if not isinstance(section, Mapping):
                raise ConfigError(f"{source}: field {key!r} is {section!r:.40}, expected a JSON "
                                  "object")
            hints = typing.get_type_hints(klass)
            for name, value in section.items():
                if name not in hints:
                    raise ConfigError(f"{source}: {key}.{name}: unknown field (written by "
                                      "another cram version?)")
                want = expected(hints[name], value)
                if want is not None:
                    raise ConfigError(f"{source}: {key}.{name}={value!r:.40}: expected {want}")
            section = dict(section)
            if isinstance(section.get("attention_layers"), list):
                section["attention_layers"] = tuple(section["attention_layers"])
            parts.append((klass, section))
        try:
            return cls(*(klass(**section) for klass, section in parts))
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
        except (TypeError, ValueError, AttributeError) as err:
            raise ConfigError(f"{source}: does not match this cram version ({err})") from None


def _preset_table() -> dict[str, ExperimentConfig]:
    tiny = ExperimentConfig(
        SRCDConfig(length=64, query_rate=0.08, n_library=20, n_novel_keys=200, n_values=16),
        ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, ct_dim=32, semantic_rank=8,
                    familiarity_hidden=16, attention_layers=(1,)),
        TrainConfig(steps=30, batch_size=8, warmup_steps=10, tau_anneal_steps=10, cost_ramp_steps=5,
                    log_every=10, eval_sequences=16, eval_batch_size=16, pattern_every=10,
                    checkpoint_every=10, retention_stages=1, lr_warmup_steps=5,
                    schedule="fixed"),  # a 30-step smoke run never learns retrieval
    )
    demo = ExperimentConfig(
        SRCDConfig(length=256),
        ModelConfig(d_model=64, n_layers=2, n_heads=4, d_ff=128, ct_dim=64, semantic_rank=16),
        TrainConfig(steps=700, batch_size=32, warmup_steps=150, log_every=25, pattern_every=50,
                    checkpoint_every=50),
    )
    cpu = ExperimentConfig(
        SRCDConfig(length=512),
        ModelConfig(d_model=64, n_layers=2, n_heads=4, d_ff=128, ct_dim=64, semantic_rank=16),
        TrainConfig(steps=3000, batch_size=32, warmup_steps=300, tau_anneal_steps=400,
                    cost_ramp_steps=200, log_every=50, pattern_every=100, checkpoint_every=100,
                    eval_sequences=128, retention_stages=4),
    )
    # issue 13/16: the routing schedule is learned (warm-up ends when attention retrieves; on
    # an H200 the dense Transformer learned retrieval at about step 1200 of this preset), and
    # the step count is sized to train in minutes on one H200 (docs/benchmarks.md, GPU check).
    # The fixed-schedule numbers stay for `cram bench schedule` comparisons.
    paper = ExperimentConfig(
        SRCDConfig(length=2048),
        ModelConfig(d_model=128, n_layers=4, n_heads=8, d_ff=512, ct_dim=128, semantic_rank=32,
                    attention_layers=(1, 3)),
        TrainConfig(steps=2400, batch_size=16, lr=1e-3, warmup_steps=1500,
                    tau_anneal_steps=300, cost_ramp_steps=300, log_every=100, pattern_every=300,
                    checkpoint_every=300, eval_sequences=64, eval_batch_size=32,
                    retention_stages=3, lr_warmup_steps=200),
    )
    return {"cpu-tiny": tiny, "demo": demo, "cpu": cpu, "paper": paper}


PRESETS = _preset_table()


def get_preset(name: str) -> ExperimentConfig:
    """The named preset's config (cpu-tiny, demo, cpu or paper)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


@dataclass(frozen=True)
class Variant:
    """A model name as a whole: its model half (``cram.models``) and its training changes."""

    model: ModelVariant
    train: Mapping[str, object] = field(default_factory=dict)  # TrainConfig field → value

    def __post_init__(self) -> None:
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(self.train) - known)
        if unknown:
            raise ConfigError(f"variant {self.name!r}: unknown TrainConfig fields {unknown}")
        object.__setattr__(self, "train", MappingProxyType(dict(self.train)))

    @property
    def name(self) -> str:
        """The variant's model name."""
        return self.model.name

    @property
    def description(self) -> str:
        """The variant's one-line description."""
        return self.model.description

    def apply(self, config: ExperimentConfig) -> ExperimentConfig:
        """``config`` with this variant's model and training changes."""
        return dataclasses.replace(config, model=self.model.apply(config.model),
                                   train=dataclasses.replace(config.train, **self.train))


#: training changes of the variants that have any (the model changes live in cram.models)
TRAIN_CHANGES: dict[str, dict[str, object]] = {
    "cram-no-consolidation": {"consolidation_weight": 0.0, "consolidation_raw_weight": 0.0},
    "cram-logit-router": {"router_logit_weight": 0.01, "cost_gate": "familiarity-queries"},
    "cram-ungated": {"cost_gate": "none"},
    "cram-no-consolidation-ungated": {"consolidation_weight": 0.0, "consolidation_raw_weight": 0.0,
                                      "cost_gate": "none"},
}
VARIANTS: dict[str, Variant] = {name: Variant(mv, TRAIN_CHANGES.get(name, {}))
                                for name, mv in MODEL_VARIANTS.items()}


def resolve(model_name: str, preset: str | ExperimentConfig, overrides: list[str] = ()
            ) -> ExperimentConfig:
    """Preset → model-variant changes → ``--set`` overrides (``data.x``, ``model.x``, ...)."""
    from cram.core.overrides import apply_overrides

    check_model_name(model_name)
    config = get_preset(preset) if isinstance(preset, str) else preset
    config = VARIANTS[model_name].apply(config)
    return apply_overrides(config, [alias_override(o) for o in overrides])


def alias_override(override: str) -> str:
    """Accept bare field names when they are unambiguous (``steps=10`` → ``train.steps=10``)."""
    name = override.split("=", 1)[0].strip()
    if "." in name:
        return override
    owners = [sec for sec, klass in (("data", SRCDConfig), ("model", ModelConfig),
                                     ("train", TrainConfig))
              if name in {f.name for f in dataclasses.fields(klass)}]
    if len(owners) == 1:
        return f"{owners[0]}.{override}"
    if len(owners) > 1:
        raise ConfigError(f"--set {override}: {name!r} is ambiguous; write "
                          + " or ".join(f"{o}.{name}" for o in owners))
    raise ConfigError(f"--set {override}: unknown field {name!r} (sections: data, model, train)")
