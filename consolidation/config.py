"""Experiment configs: frozen dataclasses for data, model and training, and the named presets.

Overrides go through ``dataclasses.replace`` (``cram ... --set train.steps=100``); every field is
checked when the dataclass is built, so configs that cannot work fail up front, naming the field.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from cram.core.errors import ConfigError
from cram.core.fields import check_fields, config_field, expected
from cram.core.identity import drop_retired
from cram.models import MODEL_VARIANTS, ModelConfig, ModelVariant, check_model_name
from cram.tasks.srcd_stream import SRCDConfig
from cram.tasks.study import StudyConfig


@dataclass(frozen=True)
class TrainConfig:
    """Training fields: steps, batch, optimiser, the routing schedule and the loss weights."""

    steps: int = config_field(700, min=1)
    batch_size: int = config_field(32, min=1)  # global batch (split across DDP ranks)
    data_shards: int = config_field(1, min=1)  # single process: draw the global batch as this
    #   many rank streams, so it sees exactly the data of a DDP run with that many ranks
    lr: float = config_field(3e-3, gt=0)
    weight_decay: float = config_field(0.0, min=0)
    grad_clip: float = config_field(1.0, min=0)
    adam_beta2: float = config_field(0.999, range=(0, 1))  # AdamW's second-moment decay
    recurrence_lr_scale: float = config_field(1.0, range=(0, 1))  # the CT-ODE recurrences (W_1)
    #   train at lr × this (1.0: one rate for every weight, as before 2026-12-07)
    lr_warmup_steps: int = config_field(30, min=0)  # linear learning-rate warm-up
    lr_decay_to: float = config_field(1.0, range=(0, 1))  # after the warm-up, the rate falls
    #   along a half cosine to lr × this at the last step (1.0: constant, as before 2026-12-07)
    # routing schedule (CRAM family)
    warmup_steps: int = config_field(150, min=0)  # routing forced to episodic memory; the γ
    #   fits' onset
    tau_start: float = 1.0  # Gumbel-softmax temperature right after warm-up ...
    tau_end: float = 0.2  # ... annealed geometrically to this
    tau_anneal_steps: int = config_field(200, min=0)
    # issue 13: "learned" (default) = warm-up ends when the retrieval criterion is met
    # (consolidation/routing_schedule.py), at the latest after max_fraction·steps, and the cost
    # ramps in from there; "fixed" = warm-up and ramp at the step counts above (a schedule tuned
    # to one task and length: `cram bench schedule` compares the two)
    schedule: Literal["fixed", "learned"] = "learned"
    schedule_threshold: float = config_field(0.9, range=(0, 1))  # criterion value that ends a
    #   learned warm-up
    schedule_horizon: int = config_field(20, min=1)  # EMA horizon of the criterion, in steps
    #   (also its minimum wait)
    schedule_max_fraction: float = config_field(0.5, range=(0, 1))  # base maximum learned
    #   warm-up, share of train.steps ...
    schedule_extend_fraction: float = config_field(0.8, range=(0, 1))  # ... extended up to this
    #   share while the signal rises
    schedule_min_rise: float = config_field(0.02, range=(0, 1))  # "rising": gained this much
    #   over the last horizon updates
    # issue 32: the relative rule. Warm-up also ends when retrieval has been learned as far as
    # forced attention takes it on this task: the signal rose by schedule_plateau_gain or more
    # above its lowest value, then gained less than schedule_min_rise over the last
    # schedule_plateau_horizons × schedule_horizon updates (0 turns the rule off)
    schedule_plateau_horizons: int = config_field(10, min=0)
    schedule_plateau_gain: float = config_field(0.25, range=(0, 1))
    schedule_signal: bool = False  # fixed schedule: also measure the criterion in warm-up, for
    #   the log (one extra no-grad forward per warm-up step; a learned schedule always does)
    # loss weights
    signal_weight: float = config_field(1.0, min=0)  # next-signal MSE
    consolidation_weight: float = config_field(1.0, min=0)  # semantic → stop-grad episodic, in
    #   q's space
    consolidation_raw_weight: float = config_field(1.0, min=0)  # raw-vector term: f_sem → r_E
    #   itself, so the layers above a semantic read get the input attention gave them (1.0 since
    #   issue 28, 2026-12-07; 0.1 before, which left library answers dipping at hand-over)
    familiarity_weight: float = config_field(1.0, min=0)  # q̂ regression toward q
    probe_weight: float = config_field(1.0, min=0)  # value probe on r_E (defines value-space q)
    cost_query: float = config_field(2.0, min=0)  # λ on the expected episodic share of query
    #   tokens
    cost_nonquery: float = config_field(0.5, min=0)  # λ on the expected episodic share of other
    #   tokens
    cost_ramp_steps: int = config_field(100, min=0)  # λ ramps linearly from 0 after warm-up
    router_logit_weight: float = config_field(0.0, min=0)  # penalty on the router's centred
    #   squared logits (query and non-query tokens averaged apart): keeps the router off
    #   saturation, where no cost moves it
    router_consistency_weight: float = config_field(1.0, min=0)  # after warm-up, at query
    #   tokens (labelled or not): the expected distance, in the value probe's readout, of the
    #   working and semantic tiers' outputs from the stop-grad episodic readout, weighted by the
    #   router's softmax over those two logits: teaches which non-attention tier reproduces what
    #   attention would fetch where no label says it (the attention share stays the cost's);
    #   1.0 since issue 28 (2026-12-07), 0 before
    cost_gate: Literal["none", "familiarity", "familiarity-queries", "replaceable"] = \
        "familiarity-queries"  # issue 28 (2026-12-07; "familiarity" before)
    #   each token's cost is scaled by its stop-grad q̂: attention is charged only where the
    #   model predicts consolidation; "none": the ungated cost;
    #   "familiarity-queries": query tokens gated, non-query tokens (no binding) charged ungated;
    #   "replaceable" (issue 32, the token-task default): as "familiarity-queries", but a
    #   labelled query that the model answers with attention switched off everywhere is charged
    #   in full (max(q̂, 1)): attention is paid for where nothing cheaper answers, found by one
    #   extra no-grad forward per step once the cost is on
    # logging and evaluation
    log_every: int = config_field(25, min=1)
    eval_sequences: int = config_field(64, min=1)
    eval_batch_size: int = config_field(32, min=1)
    eval_seed: int = config_field(10_000, min=0)
    pattern_every: int = config_field(50, min=1)
    retention_stages: int = config_field(3, min=0)  # retention curves at warm-up end plus this
    #   many evenly spaced steps
    checkpoint_every: int = config_field(50, min=1)
    threads: int = config_field(1, min=1)  # torch intra-op threads on CPU
    prefetch: int = config_field(2, min=0)  # batches drawn this many steps ahead (0: in the
    #   loop; issue 16) ...
    data_worker: Literal["auto", "thread", "process"] = "auto"  # ... in a background thread or
    #   one worker process (no GIL time taken from the loop); auto: a process on CUDA, else a
    #   thread (consolidation/batches.py). Any choice gives the same batches, bit for bit
    compile: bool = False  # torch.compile the training forward (not evaluation); the scans are
    #   custom ops and the Gumbel noise is drawn before the forward, so a CRAM model is one graph
    device: str = config_field("auto", pattern=(r"auto|cpu|mps|cuda(:.*)?",
                                                "auto, cpu, cuda[:N] or mps"))
    #   auto: CUDA (with AMP) if present, then MPS, else CPU

    def __post_init__(self) -> None:
        check_fields(self)
        if not (self.tau_start > 0 and self.tau_end > 0):  # the anneal's ratio needs both
            raise ConfigError(f"TrainConfig.tau_start/tau_end: a temperature must be > 0 "
                              f"(got {self.tau_start}, {self.tau_end})")

    def temperature(self, step: int) -> float:
        """Gumbel temperature at ``step``: tau_start after warm-up, geometric decay to tau_end."""
        after = max(step - self.warmup_steps, 0)
        frac = min(after / self.tau_anneal_steps, 1.0) if self.tau_anneal_steps else 1.0
        return float(self.tau_start * (self.tau_end / self.tau_start) ** frac)

    def learning_rate(self, step: int) -> float:
        """The rate of optimiser step ``step``: a linear warm-up, then a cosine to lr × decay_to."""
        if step < self.lr_warmup_steps:
            return self.lr * min(1.0, (step + 1) / self.lr_warmup_steps)  # as before the cosine
        span = max(self.steps - self.lr_warmup_steps, 1)
        done = min((step - self.lr_warmup_steps) / span, 1.0)
        return self.lr * (self.lr_decay_to + (1 - self.lr_decay_to)
                          * 0.5 * (1 + math.cos(math.pi * done)))

    def cost_scale(self, step: int) -> float:
        """Multiplier of the cost weights: 0 in warm-up, then a linear ramp to 1."""
        if step < self.warmup_steps:
            return 0.0
        if not self.cost_ramp_steps:
            return 1.0
        return min((step - self.warmup_steps + 1) / self.cost_ramp_steps, 1.0)


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole run's config: data (SRCD), model, training fields and the study protocol.

    The study protocol (``tasks/study.py``) is a forgetting experiment run while the model
    trains; it is off by default.
    """

    data: SRCDConfig = field(default_factory=SRCDConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    study: StudyConfig = field(default_factory=StudyConfig)

    def __post_init__(self):
        if self.train.router_consistency_weight and self.model.q_space != "value":
            raise ConfigError("train.router_consistency_weight needs model.q_space=value (it "
                              "compares tiers in the value probe's readout), got "
                              f"{self.model.q_space!r}")

    def to_dict(self) -> dict:
        """The config as plain dicts (config.json and checkpoints)."""
        out = {"data": dataclasses.asdict(self.data),
               "model_config": dataclasses.asdict(self.model),
               "train": dataclasses.asdict(self.train)}
        if self.study.on:  # written only when on: a run without it reads as it always did
            out["study"] = dataclasses.asdict(self.study)
        return out

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
        import typing

        if not isinstance(d, Mapping):
            raise ConfigError(f"{source}: expected a JSON object, got {type(d).__name__}")
        parts = []
        for key, klass in (("data", SRCDConfig), ("model_config", ModelConfig),
                           ("train", TrainConfig), ("study", StudyConfig)):
            if key == "study" and key not in d:  # optional: written only when the protocol is on
                parts.append((klass, {}))
                continue
            if key not in d:
                raise ConfigError(f"{source}: no {key!r} section")
            section = d[key]
            if not isinstance(section, Mapping):
                raise ConfigError(f"{source}: field {key!r} is {section!r:.40}, expected a JSON "
                                  "object")
            section = drop_retired(key, section, source)
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


#: issue 28 (2026-12-07): the task of the demo, cpu and paper presets. Library answers are
#: unlabelled (a library value reaches a library query only through attention or through what
#: consolidation wrote, so the readout cannot learn the library directly) and keys are noisy
#: vectors (familiarity must be learned from what a key looks like, not from its id)
SHORTCUT_CLOSED = {"key_encoding": "vector", "key_noise": 0.1, "library_answer": "unlabelled"}
#: the CRAM defaults before issue 28; the presets named ``*-labelled`` keep them, on the paper's
#: labelled SRCD with id keys, so every run made on demo/cpu/paper before 2026-12-07 is one preset
#: name away (the claims that were measured there name these presets)
BEFORE_ISSUE_28_MODEL = {"router_feature": "prob", "familiarity_hidden": 32}
BEFORE_ISSUE_28_TRAIN = {"consolidation_raw_weight": 0.1, "router_consistency_weight": 0.0,
                         "cost_gate": "familiarity"}


def _preset_table() -> dict[str, ExperimentConfig]:
    tiny = ExperimentConfig(
        SRCDConfig(length=64, query_rate=0.08, n_library=20, n_novel_keys=200, n_values=16),
        ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, ct_dim=32, semantic_rank=8,
                    attention_layers=(1,), working_dropout=0.0,  # the pinned golden runs
                    **{**BEFORE_ISSUE_28_MODEL, "familiarity_hidden": 16}),  # (tests/data)
        TrainConfig(steps=30, batch_size=8, warmup_steps=10, tau_anneal_steps=10, cost_ramp_steps=5,
                    log_every=10, eval_sequences=16, eval_batch_size=16, pattern_every=10,
                    checkpoint_every=10, retention_stages=1, lr_warmup_steps=5,
                    schedule="fixed",  # a 30-step smoke run never learns retrieval
                    **BEFORE_ISSUE_28_TRAIN),
    )
    small = {"d_model": 64, "n_layers": 2, "n_heads": 4, "d_ff": 128, "ct_dim": 64}
    demo_train = {"batch_size": 32, "warmup_steps": 150, "log_every": 25, "pattern_every": 50,
                  "checkpoint_every": 50}
    cpu_train = {"steps": 3000, "batch_size": 32, "warmup_steps": 300, "tau_anneal_steps": 400,
                 "cost_ramp_steps": 200, "log_every": 50, "pattern_every": 100,
                 "checkpoint_every": 100, "eval_sequences": 128, "retention_stages": 4}
    # issue 13/16: the routing schedule is learned (warm-up ends when attention retrieves; on
    # an H200 the dense Transformer learned retrieval at about step 1200 of this preset), and
    # the step count is sized to train in minutes on one H200 (docs/benchmarks.md, GPU check).
    # The fixed-schedule numbers stay for `cram bench schedule` comparisons.
    paper_model = {"d_model": 128, "n_layers": 4, "n_heads": 8, "d_ff": 512, "ct_dim": 128,
                   "attention_layers": (1, 3)}
    paper_train = {"steps": 2400, "batch_size": 16, "lr": 1e-3, "warmup_steps": 1500,
                   "tau_anneal_steps": 300, "cost_ramp_steps": 300, "log_every": 100,
                   "pattern_every": 300, "checkpoint_every": 300, "eval_sequences": 64,
                   "eval_batch_size": 32, "retention_stages": 3, "lr_warmup_steps": 200}
    # issue 28: the default CRAM on the shortcut-closed task. The semantic tier holds the whole
    # library (rank 64; 16 left bindings out), and the demo trains 2100 steps: attention hands
    # library bindings over between steps 650 and 1000 (docs/cram.md)
    demo = ExperimentConfig(SRCDConfig(length=256, **SHORTCUT_CLOSED),
                            ModelConfig(**small, semantic_rank=64),
                            TrainConfig(steps=2100, **demo_train))
    cpu = ExperimentConfig(SRCDConfig(length=512, **SHORTCUT_CLOSED),
                           ModelConfig(**small, semantic_rank=64), TrainConfig(**cpu_train))
    paper = ExperimentConfig(SRCDConfig(length=2048, **SHORTCUT_CLOSED),
                             ModelConfig(**paper_model, semantic_rank=64),
                             TrainConfig(**paper_train))
    # the same presets as they were before issue 28: labelled SRCD, id keys, earlier defaults
    demo_labelled = ExperimentConfig(
        SRCDConfig(length=256), ModelConfig(**small, semantic_rank=16, **BEFORE_ISSUE_28_MODEL),
        TrainConfig(steps=700, **demo_train, **BEFORE_ISSUE_28_TRAIN))
    cpu_labelled = ExperimentConfig(
        SRCDConfig(length=512), ModelConfig(**small, semantic_rank=16, **BEFORE_ISSUE_28_MODEL),
        TrainConfig(**cpu_train, **BEFORE_ISSUE_28_TRAIN))
    paper_labelled = ExperimentConfig(
        SRCDConfig(length=2048),
        ModelConfig(**paper_model, semantic_rank=32, **BEFORE_ISSUE_28_MODEL),
        TrainConfig(**paper_train, **BEFORE_ISSUE_28_TRAIN))
    return {"cpu-tiny": tiny, "demo": demo, "cpu": cpu, "paper": paper,
            "demo-labelled": demo_labelled, "cpu-labelled": cpu_labelled,
            "paper-labelled": paper_labelled}


PRESETS = _preset_table()


def get_preset(name: str) -> ExperimentConfig:
    """The named preset's config (cpu-tiny, demo, cpu, paper or one of the ``*-labelled``)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


@dataclass(frozen=True)
class Variant:
    """A model name as a whole: its one record in ``cram.models`` (model and training changes).

    Building it checks the record's training changes against ``TrainConfig``'s fields.
    """

    model: ModelVariant

    def __post_init__(self) -> None:
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(self.train) - known)
        if unknown:
            raise ConfigError(f"variant {self.name!r}: unknown TrainConfig fields {unknown}")

    @property
    def name(self) -> str:
        """The variant's model name."""
        return self.model.name

    @property
    def description(self) -> str:
        """The variant's one-line description."""
        return self.model.description

    @property
    def train(self) -> Mapping[str, object]:
        """The variant's ``TrainConfig`` changes (field → value, read-only)."""
        return self.model.train

    @property
    def token_refusal(self) -> str:
        """Why token tasks cannot run this model; ``""`` if they can."""
        return self.model.token_refusal

    def apply(self, config: ExperimentConfig) -> ExperimentConfig:
        """``config`` with this variant's model and training changes."""
        return dataclasses.replace(config, model=self.model.apply(config.model),
                                   train=dataclasses.replace(config.train, **self.train))


#: every model name's variant, built from the one table (``cram.models.MODEL_VARIANTS``)
VARIANTS: dict[str, Variant] = {name: Variant(mv) for name, mv in MODEL_VARIANTS.items()}


def token_refusal(model_name: str) -> str:
    """Why token tasks cannot run ``model_name`` (one clause), ``""`` if they can."""
    check_model_name(model_name)
    return VARIANTS[model_name].token_refusal


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
                                     ("train", TrainConfig), ("study", StudyConfig))
              if name in {f.name for f in dataclasses.fields(klass)}]
    if len(owners) == 1:
        return f"{owners[0]}.{override}"
    if len(owners) > 1:
        raise ConfigError(f"--set {override}: {name!r} is ambiguous; write "
                          + " or ".join(f"{o}.{name}" for o in owners))
    raise ConfigError(f"--set {override}: unknown field {name!r} "
                      "(sections: data, model, train, study)")


def model_refusal(model_name: str, encoding: str) -> str:
    """Why ``model_name`` cannot train on data of ``encoding`` (a task's), "" if it can.

    The variant record says which input it needs that an encoding lacks (``cram-static`` reads
    SRCD's query events, which a token encoding never gives).
    """
    return {"tokens": token_refusal(model_name)}.get(encoding, "")
