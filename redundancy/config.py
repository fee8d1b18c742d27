"""What the redundancy study fits and how it trains: probe and training configs, presets."""

from __future__ import annotations

from dataclasses import dataclass, field

from cram.core.errors import ConfigError


@dataclass(frozen=True)
class ProbeConfig:
    """What the probe fits and how it is judged.

    Parameters
    ----------
    n_fit_seqs, n_eval_seqs : int
        Sequences (windows of the model's context length, capped at ``seq_len``) to fit on and to
        evaluate on; evaluation windows come from held-out text.
    seq_len : int
        Window length (``0`` = the model's ``n_positions``).
    cos_threshold : float
        An attention operation (token, layer) is "predictable" when cos(a, â) ≥ this.
    cos_grid, relerr_grid : tuple of float
        Thresholds for the sensitivity table (cosine ≥ τ; relative error ‖a − â‖/‖a‖ ≤ ε).
    ridge_alphas : tuple of float
        Ridge strengths relative to the mean eigenvalue of the centred Gram matrix; the one with
        the lowest squared error on a validation fifth of the fit tokens is used.
    batch_size : int
        Sequences per forward pass.
    seed : int
        Seed for the choice of windows and the random-replacement control.
    """

    n_fit_seqs: int = 64
    n_eval_seqs: int = 32
    seq_len: int = 0
    cos_threshold: float = 0.9
    cos_grid: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)
    relerr_grid: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
    ridge_alphas: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_fit_seqs < 2 or self.n_eval_seqs < 1:
            raise ConfigError("ProbeConfig: n_fit_seqs must be >= 2 and n_eval_seqs >= 1")
        if not -1.0 <= self.cos_threshold <= 1.0:
            raise ConfigError(f"ProbeConfig.cos_threshold={self.cos_threshold} not in [-1, 1]")
        if not self.ridge_alphas or min(self.ridge_alphas) <= 0:
            raise ConfigError("ProbeConfig.ridge_alphas must be non-empty and positive")


@dataclass(frozen=True)
class TrainSmallConfig:
    """Training a small byte-level GPT-2 on the shipped corpus, with checkpoints to probe.

    ``model`` names a preset of :data:`cram.redundancy.gpt2.PRESETS`; ``checkpoint_steps`` are the
    steps at which a checkpoint is saved and probed (0 = the initialisation).
    """

    preset: str = "cpu-tiny"
    model: str = "cpu-tiny"
    steps: int = 100
    batch_size: int = 8
    lr: float = 3e-3
    min_lr_fraction: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.1
    dropout: float = 0.0
    grad_clip: float = 1.0
    checkpoint_steps: tuple[int, ...] = (0, 20, 100)
    val_fraction: float = 0.1
    val_batches: int = 4
    seed: int = 0
    probe: ProbeConfig = field(default_factory=lambda: ProbeConfig(n_fit_seqs=32, n_eval_seqs=16))

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"TrainSmallConfig.steps must be >= 1, got {self.steps}")
        bad = [s for s in self.checkpoint_steps if not 0 <= s <= self.steps]
        if bad or not self.checkpoint_steps:
            raise ConfigError(
                f"TrainSmallConfig.checkpoint_steps={self.checkpoint_steps}: each must be in "
                f"[0, steps={self.steps}]"
            )


TRAIN_PRESETS: dict[str, TrainSmallConfig] = {
    # about 10-20 s on 2 CPU cores, probe and causal check included
    "cpu-tiny": TrainSmallConfig(),
    # about 5-12 min on one CPU thread of a busy 2-core machine
    "cpu": TrainSmallConfig(
        preset="cpu", model="cpu", steps=600, batch_size=16, lr=2e-3, warmup_steps=40,
        dropout=0.0, checkpoint_steps=(0, 30, 100, 300, 600), val_batches=16,
        probe=ProbeConfig(n_fit_seqs=128, n_eval_seqs=64),
    ),
}


def train_preset(name: str) -> TrainSmallConfig:
    """The :class:`TrainSmallConfig` preset ``name`` (see :data:`TRAIN_PRESETS`)."""
    if name not in TRAIN_PRESETS:
        raise ConfigError(f"unknown --preset {name!r}; choose one of {sorted(TRAIN_PRESETS)}")
    return TRAIN_PRESETS[name]
