"""The trainer's state and the restore step: build it fresh, load it from a checkpoint, save it.

:class:`TrainState` is everything a resumed run needs to continue bit-identically: weights,
optimiser moments, the Gumbel generator of every rank, the step, the per-pattern exposure counts
and the training wall-clock so far. The data stream needs no state (batch ``i`` of rank ``r`` is
a function of (seed, r, i), see ``srcd.stream_rng``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cram.core.errors import CheckpointError, CramError, RunFolderError
from cram.core.identity import (
    ABSENT,
    check_same_experiment,
    experiment_identity,
    identity_differences,
)
from cram.core.runs import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    META_FILE,
    METRICS_FILE,
    read_json,
    read_table,
)
from cram.models import DataSpec, build_model
from cram.models.working_memory import CTODE

from .checkpoint import load_latest, nonfinite_tensors, save_checkpoint
from .config import ExperimentConfig
from .routing_schedule import RoutingSchedule


class TrainingDiverged(CramError):
    """The loss or the weights became NaN or infinite; the last finite checkpoint is kept."""


SYNC_FREE_ENV = "CRAM_SYNC_FREE"  # "1": device-resident steps anywhere; "0": never; unset: CUDA


def sync_free(device: torch.device) -> bool:
    """Whether training steps on ``device`` avoid every per-step host read-back (issue 16).

    On: batches are copied from pinned memory without blocking, the loss's finiteness is kept
    as a device flag that makes the fused AdamW skip the step (read at the next logged row), and
    no loss term uses a data-dependent shape. Default on CUDA, where a read-back stalls the
    launch queue; off on CPU, where it costs nothing and the plain path keeps runs bit-identical
    to the golden files. ``CRAM_SYNC_FREE=1`` turns it on anywhere (the CPU tests of this path),
    ``=0`` off.
    """
    flag = os.environ.get(SYNC_FREE_ENV)
    if flag in ("0", "1"):
        return flag == "1"
    return device.type == "cuda"


@dataclass
class TrainState:
    """Everything that changes while training and is saved in a checkpoint."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    gumbel: torch.Generator  # this rank's routing-noise generator
    step: int = 0
    exposures: np.ndarray | None = None  # (n_library,) training queries seen per library pattern
    train_seconds: float = 0.0
    schedule: RoutingSchedule | None = None  # issue 13: when warm-up ends (fixed or learned)
    # sync-free steps (issue 16), not saved: 1.0 once a loss was non-finite (the optimiser then
    # skips every step), and the first such step (-1: none); both 0-dim device tensors
    nonfinite: torch.Tensor | None = None
    nonfinite_step: torch.Tensor | None = None


def fresh_state(model_name: str, config: ExperimentConfig, seed: int, rank: int,
                device: torch.device, spec: DataSpec | None = None,
                n_library: int | None = None) -> TrainState:
    """Build a new model (seeded, global RNG untouched), its optimiser and Gumbel generator.

    ``spec`` and ``n_library`` default to SRCD's (``config.data``); a token task passes its own.
    """
    d = config.data
    spec = spec if spec is not None else DataSpec(d.n_keys, d.n_values, d.key_encoding, d.key_dim)
    n_library = d.n_library if n_library is None else n_library
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(model_name, config.model, spec).to(device)
    optimizer = torch.optim.AdamW(param_groups(model, config.train.recurrence_lr_scale),
                                  lr=config.train.lr, weight_decay=config.train.weight_decay,
                                  betas=(0.9, config.train.adam_beta2),
                                  fused=True if sync_free(device) else None)
    gumbel = torch.Generator(device=device).manual_seed(seed * 1000 + 7 + rank)
    return TrainState(model, optimizer, gumbel, exposures=np.zeros(n_library),
                      schedule=RoutingSchedule(config.train))


def param_groups(model: torch.nn.Module, recurrence_lr_scale: float) -> list[dict]:
    """The optimiser's parameter groups: one, or the CT-ODE recurrences apart at a scaled rate.

    A group's ``lr_scale`` (absent: 1.0) multiplies the step's learning rate (``train_step``). At
    scale 1.0 there is one plain group, the optimiser and checkpoints of cram before the field.
    """
    if recurrence_lr_scale == 1.0:
        return [{"params": list(model.parameters())}]
    recurrent = {id(m.w1) for m in model.modules() if isinstance(m, CTODE)}
    rest, slow = [], []
    for p in model.parameters():
        (slow if id(p) in recurrent else rest).append(p)
    return [{"params": rest, "lr_scale": 1.0},
            {"params": slow, "lr_scale": recurrence_lr_scale}]


def _same_implementation(saved: dict, optimizer: torch.optim.Optimizer) -> dict:
    """``saved`` with this optimiser's implementation flags (fused / foreach) in its groups.

    Loading restores every group setting from the checkpoint, so a run saved on the CPU (plain
    AdamW) and resumed on CUDA (fused, issue 16) would otherwise come back unfused; the moments
    and step counts are the same in both.
    """
    flags = {k: optimizer.param_groups[0].get(k) for k in ("fused", "foreach")}
    groups = [{**g, **flags} for g in saved.get("param_groups", [])]
    return {**saved, "param_groups": groups}


def restore(ts: TrainState, ckpt: dict, rank: int) -> None:
    """Load a checkpoint's weights, optimiser, generator, step and counters into ``ts``."""
    try:
        ts.model.load_state_dict(ckpt["model"])
        ts.optimizer.load_state_dict(_same_implementation(ckpt["optimizer"], ts.optimizer))
    except (RuntimeError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint does not fit this run's model ({first})") from None
    if rank < len(ckpt["generator_states"]):
        ts.gumbel.set_state(ckpt["generator_states"][rank].to("cpu"))
    ts.step = int(ckpt["step"])
    ts.exposures = np.asarray(ckpt["exposures"], float)
    ts.train_seconds = float(ckpt["train_seconds"])
    if ts.schedule is not None and "routing_schedule" in ckpt:  # issue 13 (older: fresh)
        ts.schedule.load_state_dict(ckpt["routing_schedule"])


def saved_run(run_dir: Path, model_name: str) -> dict:
    """Read the config.json record of a run to resume and check it against ``model_name``."""
    path = Path(run_dir) / CONFIG_FILE
    saved = read_json(path)  # RunFolderError naming the file: not UTF-8, not JSON, not an object
    if saved.get("model") != model_name:
        raise RunFolderError(f"{run_dir}: run was trained as {saved.get('model')!r}, "
                             f"not {model_name!r}")
    return saved


def load_resume_checkpoint(run_dir: Path, model_name: str,
                           warn: Callable[[str], None]) -> dict | None:
    """Load last.pt, else prev.pt (warned); None: a run without checkpoint starts at step 0.

    A run without a checkpoint restarts only if it had nothing to lose: a finished run, or one
    with logged rows past step 0, is refused (its checkpoints were deleted or moved), so that a
    resume never truncates work; ``--restart`` is the way to start such a folder over.
    """
    ckpt = load_latest(Path(run_dir) / CHECKPOINT_DIR, model_name, warn)
    if ckpt is None:
        _refuse_lost_checkpoints(Path(run_dir))
        warn(f"{run_dir}: no checkpoint yet; starting the run over from step 0")
    return ckpt


def _refuse_lost_checkpoints(run_dir: Path) -> None:
    """Raise :class:`RunFolderError` if a folder without checkpoints holds work past step 0."""
    status = None
    if (run_dir / META_FILE).is_file():
        try:
            status = read_json(run_dir / META_FILE).get("status")
        except RunFolderError:
            status = None
    last = _last_logged_step(run_dir / METRICS_FILE)
    if status == "finished" or (last is not None and last > 0):
        what = f"status {status}" if status == "finished" else f"rows up to step {last:g}"
        raise RunFolderError(
            f"{run_dir}: no checkpoint to resume from ({CHECKPOINT_DIR}/ is empty or missing) "
            f"but metrics.csv has {what}; nothing was changed. --restart starts it over")


def _last_logged_step(metrics: Path) -> float | None:
    """The largest step among metrics.csv's complete rows (None: no file, no rows, unreadable)."""
    if not metrics.is_file():
        return None
    try:
        table, _ = read_table(metrics)  # a partial last line is dropped
    except RunFolderError:
        return None
    if "step" not in table.columns or not len(table):
        return None
    import pandas as pd

    steps = pd.to_numeric(table["step"], errors="coerce").dropna()
    return float(steps.max()) if len(steps) else None


def check_resume_identity(run_dir: Path, ckpt: dict, asked: dict) -> None:
    """Refuse a checkpoint that is not the experiment of ``asked`` (config.json, as resolved).

    ``asked`` is ``{"model", "seed", "data", "model_config", "train", "task"}``; the checkpoint's
    ``experiment`` (and ``task``, recorded since checkpoints carry it) must match it in every
    field but ``train.steps``: a config.json edited after training (seed, lr) or a checkpoint
    copied from another run is refused in one line.
    """
    if "experiment" not in ckpt:
        raise CheckpointError(f"{run_dir / CHECKPOINT_DIR}: checkpoint lacks its experiment "
                              "record; cannot check that it belongs to this run")
    found = {**ckpt["experiment"], "task": ckpt.get("task")}
    diffs = identity_differences(experiment_identity(asked, steps=False, task="task" in ckpt),
                                 experiment_identity(found, steps=False, task="task" in ckpt))
    newer = [field for field, _, value in diffs if value is ABSENT]
    if diffs and len(newer) == len(diffs):  # only fields this cram added since the checkpoint
        raise CheckpointError(
            f"{run_dir}: the checkpoint was written before this cram had {', '.join(newer[:3])}"
            f"{' (and more)' if len(newer) > 3 else ''}; resuming would train on under the "
            "current defaults, which may not be how it was trained: resume it with the cram "
            "that trained it (the commit in meta.json), or start a new run; nothing was changed")
    check_same_experiment(asked, found, expected_name="config.json", found_name="the checkpoint",
                          where=str(run_dir), steps=False, task="task" in ckpt,
                          hint="was config.json edited, or the checkpoint copied from another "
                               "run? nothing was changed")


def save_state(run_dir: Path, ts: TrainState, model_name: str, seed: int,
               config: ExperimentConfig, generator_states: list[torch.Tensor],
               task_record: dict | None = None) -> None:
    """Write ``ts`` as the run's last.pt; refuse non-finite weights or optimiser moments.

    The checkpoint records the experiment (model, seed, config) and the task record, so that
    every reuse can check it against config.json (``check_resume_identity``, ``load_trained``).
    """
    model_state, opt_state = ts.model.state_dict(), ts.optimizer.state_dict()
    bad = nonfinite_tensors({"model": model_state, "optimizer": opt_state})
    if bad:
        raise TrainingDiverged(
            f"non-finite weights after step {ts.step} ({len(bad)} tensors, e.g. {bad[0]}); "
            f"the last finite checkpoint is kept in {Path(run_dir) / CHECKPOINT_DIR}")
    save_checkpoint(Path(run_dir) / CHECKPOINT_DIR, {
        "model_name": model_name, "model_args": ts.model.model_args(),
        "experiment": {"model": model_name, "seed": seed, **config.to_dict()},
        "task": task_record,
        "model": model_state, "optimizer": opt_state, "step": ts.step,
        "generator_states": generator_states, "exposures": torch.as_tensor(ts.exposures),
        "train_seconds": ts.train_seconds, "torch_version": str(torch.__version__),
        **({"routing_schedule": ts.schedule.state_dict()} if ts.schedule is not None else {})})
