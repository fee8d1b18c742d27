"""One readable training loop that writes a self-describing, crash-safe run folder.

``train(model_name, config, out, seed)`` trains a registered model on an endless data stream,
evaluates it with hard routing on a fixed evaluation set every ``log_every`` steps, and writes the
run folder described in docs/run_folder.md. Where things happen:

- a batch comes from the *task* (``batches.draw_batch``; SRCD unless ``data=`` is given);
- the loss and the optimiser step are :func:`train_step` (loss terms from ``losses.task_loss``);
- files are written by ``run_writer.RunWriter`` under a ``run_writer.RunLock``; checkpoints by
  ``restore.save_state`` (after a finiteness check) and read back by ``restore`` / ``checkpoint``.

The data seam is the task (``cram.tasks.view``): SRCD's generator in its native encoding, or a
token task through the token protocol. The loop asks the task for everything that depends on
the data (the model's data spec, the loss view, the evaluation view, the exposure counts, the
sequence length, the training defaults) and never asks which task it is. A batch needs
``type(batch).concat(list_of_batches)`` and ``batch.to_torch(device)`` (what the model takes).

Under ``torchrun`` it trains with DistributedDataParallel (gloo on CPU, NCCL on CUDA): each rank
draws its own seeded stream, and only rank 0 evaluates, logs and checkpoints. Crash safety: rows
are appended with fsync *before* the checkpoint of the same step is written, and a resume
truncates every table back to the checkpoint's step, so a run killed at any instant and resumed
ends with the same metrics as an uninterrupted run (batch ``i`` of rank ``r`` is a function of
(seed, r, i), and all RNG state is in the checkpoint).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cram.core.columns import metric_columns
from cram.core.errors import ConfigError, ResourceError, RunFolderError, Terminated
from cram.core.runs import CHECKPOINT_DIR, CONFIG_FILE, METRICS_FILE, read_table
from cram.models import DataSpec, Route
from cram.tasks import TaskError
from cram.tasks.srcd_stream import IGNORE_INDEX, SRCD
from cram.tasks.study import studied
from cram.tasks.view import training_task

from .batches import prefetcher, step_batches, worker_kind
from .checkpoint import remove_temp_files
from .config import ExperimentConfig, model_refusal
from .evaluate import evaluate
from .forgetting import forgetting_rows, probe_bindings
from .losses import ANSWERED_WITHOUT_ATTENTION, task_loss
from .restore import (
    TrainingDiverged,
    TrainState,
    check_resume_identity,
    fresh_state,
    load_resume_checkpoint,
    restore,
    save_state,
    saved_run,
    sync_free,
)
from .routing_schedule import (  # issue 13
    RoutingSchedule,
    answered_without_attention,
    measure_criterion,
)
from .run_writer import RunLock, RunWriter, prepare_folder, run_meta
from .transition import transition_summary

__all__ = ["OutOfResources", "TrainingDiverged", "metric_columns", "train", "train_step"]

MAX_SEED = 2**32 - 1


class OutOfResources(ResourceError):
    """Out of memory, disk space or I/O while training (exit 3); the last checkpoint is kept."""


@dataclass(frozen=True)
class Launch:
    """How this process was launched: its rank, the world size and its local rank.

    Read from torchrun's environment once per run (:meth:`from_env`); a single process is rank
    0 of a world of 1. Everything below takes it from the run's ``_Dist``.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Launch":
        env = os.environ
        return cls(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")),
                   int(env.get("LOCAL_RANK", "0")))


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: CUDA (this rank's), then MPS, else CPU; a named device must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r}: this torch has no usable CUDA device "
                          "(use train.device=auto or cpu)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"train.device={name!r}: only {torch.cuda.device_count()} CUDA devices")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                     and torch.backends.mps.is_available()):
        raise ConfigError(f"train.device={name!r}: MPS is not available here")
    return device


@contextlib.contextmanager
def flush_denormals():
    """CPU float math flushes subnormal numbers (below 1.2e-38 in fp32) to zero while inside.

    Late in a run many backward-pass gradients shrink into the subnormal range, and the CPU's
    matrix kernels slow down several-fold on them (demo preset: 0.4 s a step at first, 1.4-1.7
    s a step after step 800-1400; 0.5 s with flushing, from the same checkpoint). Values that
    small change nothing a run logs: the logged rows of a run resumed with and without it are
    equal. On leaving, flushing is switched off again (torch's default).
    """
    torch.set_flush_denormal(True)  # False (and a no-op) where the CPU cannot
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


class _Dist:
    """Rank, world size and the process group under torchrun; a no-op in a single process."""

    def __init__(self, launch: Launch, device_kind: str):
        self.launch = launch
        self.world, self.rank = launch.world, launch.rank
        self.enabled = self.world > 1
        if self.enabled and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if device_kind == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def all_sum(self, array: np.ndarray) -> np.ndarray:
        if not self.enabled:
            return array
        t = torch.as_tensor(array, dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return t.numpy()

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def retention_steps(config: ExperimentConfig) -> set[int]:
    """Return the steps with retention curves: warm-up end, ``retention_stages`` more, last.

    Under the learned schedule the warm-up end is not known in advance; ``warmup_steps`` only
    anchors this grid there, so it is rounded to a multiple of ``log_every``.
    """
    t = config.train
    first = t.warmup_steps
    if t.schedule == "learned":
        first = int(round(first / t.log_every) * t.log_every)
    stages = {min(first, t.steps)} if first else set()
    if t.retention_stages:
        for x in np.linspace(first, t.steps, t.retention_stages + 1)[1:]:
            stages.add(int(round(x / t.log_every) * t.log_every))
    stages.add(t.steps)
    return {min(s, t.steps) for s in stages}


def check_run_args(config: ExperimentConfig, seed: Any, launch: Launch = Launch()) -> None:
    """Every argument check that needs no run folder, so a bad one never leaves a folder behind."""
    t = config.train
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not (
            0 <= seed <= MAX_SEED):
        raise ConfigError(f"seed={seed!r}: must be an integer in [0, {MAX_SEED}]")
    world = launch.world
    shards, what = (world, "ranks") if world > 1 else (t.data_shards, "train.data_shards")
    if t.batch_size % shards:
        raise ConfigError(f"train.batch_size={t.batch_size} is not divisible by {what}={shards}")
    lost = sorted(s for s in retention_steps(config) if s % t.log_every and s != t.steps)
    if lost:
        raise ConfigError(f"train.warmup_steps={t.warmup_steps}: retention curves are due at steps "
                          f"{lost}, which are not multiples of train.log_every={t.log_every}")
    pick_device(t.device, launch.local_rank)


@dataclass
class _Run:
    """What the loop needs besides the trainer state (fixed for the whole run)."""

    model_name: str
    config: ExperimentConfig
    seed: int
    out: Path
    device: torch.device
    dist: _Dist
    task: Any  # the task (cram.tasks.view; see the module docstring)
    train_model: torch.nn.Module  # the model, or its DDP wrapper
    tiered: bool  # the model routes among memory tiers (forced episodic in warm-up, patterns)
    autocast: Any
    eval_set: Any = None  # rank 0 only
    test_set: Any = None  # rank 0 only: the study protocol's tests (tasks/study.py), if on
    task_record: dict | None = None  # config.json's task entry (saved in every checkpoint too)
    train_length: int | None = None  # tokens per training sequence (read off the first batch)
    scheduled: bool = False  # the routing schedule's criterion is measured on it (tiered, or a
    #   cost-matched baseline: models.common.SRCDModel.follows_routing_schedule)


@dataclass(frozen=True)
class _Request:
    """What one call of :func:`train` asks for, resolved (on ``--resume``: the saved config)."""

    model_name: str
    config: ExperimentConfig
    out: Path
    seed: int
    preset: str
    resume: bool
    extended: bool  # --resume with --steps: config.json records the new step count
    argv: list[str] | None
    progress: bool
    task: Any  # the task (cram.tasks.view), or None: SRCD from config.data
    task_record: dict | None  # config.json's ``task`` entry


def train(model_name: str, config: ExperimentConfig, out: str | os.PathLike, seed: int = 0,
          preset: str = "custom", resume: bool = False, argv: list[str] | None = None,
          progress: bool = True, *, data: Any = None, restart: bool = False,
          steps: int | None = None, task_record: dict | None = None) -> Path:
    """Train ``model_name`` and write the run folder ``out``; return its path.

    ``resume`` continues ``out`` from its newest checkpoint with its saved config (from step 0
    if it has none); ``steps`` then moves ``train.steps`` (the run is extended, or shortened to
    a step not before the checkpoint's). ``restart`` starts over a folder that has no
    checkpoint. ``data`` (a task, ``cram.tasks``) replaces SRCD built from ``config.data``; it
    is checked here, before any folder exists, and ``task_record`` (``cram.tasks.record``) is
    stored as config.json's ``task`` so ``cram eval`` can reload it.
    """
    out = Path(out)
    if resume and restart:
        raise ConfigError("--resume and --restart exclude each other")
    if (resume or restart) and not out.is_dir():
        verb = "resume" if resume else "restart"
        raise RunFolderError(f"{out}: nothing to {verb} (no such folder)")
    launch = Launch.from_env()  # the one read of torchrun's environment
    if not resume:
        check_run_args(config, seed, launch)
    if data is not None:
        data = training_task(data)  # a token task: every later call checked, named as its own
        data.check()
        _check_model(model_name, data)
    if not resume:  # the study schedule must fit the task and the steps before any folder
        studied(data if data is not None else training_task(SRCD(config.data)), config.study,
                config.train.steps)
    rank = launch.rank
    if rank == 0:
        if not (resume or restart):
            prepare_folder(out, "fresh")  # read-only early refusal; repeated under the lock
        _make_folder(out)
    with RunLock(out) if rank == 0 else contextlib.nullcontext():
        if rank == 0:
            prepare_folder(out, "resume" if resume else "restart" if restart else "fresh")
        if resume:
            saved = saved_run(out, model_name)
            config, seed, preset = ExperimentConfig.from_dict(
                saved, source=str(out / CONFIG_FILE)), saved.get("seed", seed), \
                saved.get("preset", preset)
            if steps is not None:
                config = dataclasses.replace(
                    config, train=dataclasses.replace(config.train, steps=steps))
            check_run_args(config, seed, launch)
        dist = _Dist(launch, pick_device(config.train.device, launch.local_rank).type)
        req = _Request(model_name, config, out, int(seed), preset, resume,
                       resume and steps is not None, argv, progress, data, task_record)
        try:
            with flush_denormals():
                return _train(req, dist)
        finally:
            dist.close()


def _make_folder(out: Path) -> None:
    """Create the run folder; a machine that cannot is a resource error (exit 3) naming it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        cls = ResourceError if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM,
                                             errno.ENOSPC, errno.EDQUOT) else RunFolderError
        raise cls(f"{err.filename or out}: cannot create the run folder ({err.strerror})"
                  ) from None


def _warn(message: str) -> None:
    print(f"cram train: warning: {message}", file=sys.stderr)


def _check_model(model_name: str, task: Any) -> None:
    """Refuse a model that needs an input this task's encoding lacks (before any folder)."""
    reason = model_refusal(model_name, task.encoding)
    if reason:
        raise ConfigError(f"--model {model_name}: not available on task {task.name!r} "
                          f"({task.encoding} input): {reason}")


def _train(req: _Request, dist: _Dist) -> Path:
    """Restore or build the state, open the writer (rank 0), run the loop, finish the folder."""
    model_name, config, out, seed = req.model_name, req.config, req.out, req.seed
    resume, task_record = req.resume, req.task_record
    if dist.main:
        remove_temp_files(out / CHECKPOINT_DIR)
    ckpt = load_resume_checkpoint(out, model_name, _warn if dist.main else lambda m: None) \
        if resume else None
    if ckpt is not None:  # config.json and the checkpoint must be one experiment
        check_resume_identity(out, ckpt, {"model": model_name, "seed": seed, **config.to_dict(),
                                          "task": task_record})
    if ckpt is not None and int(ckpt["step"]) > config.train.steps:
        raise ConfigError(f"--steps {config.train.steps}: before the checkpoint's step "
                          f"{int(ckpt['step'])} in {out / CHECKPOINT_DIR}")
    dist.barrier()
    run, ts = _setup(req, dist, ckpt)
    run.task_record = task_record
    writer = None
    if dist.main:
        writer = RunWriter.open(
            out, {"model": model_name, "preset": req.preset, "seed": seed, **config.to_dict(),
                  **({"task": task_record} if task_record is not None else {})},
            metric_columns(config.model.n_layers, run.task.per_token_metrics),
            after_step=(ts.step if ckpt is not None else -1) if resume else None,
            write_config=not resume or req.extended,
            meta=run_meta(req.argv, run.device, dist.world, ts.train_seconds,
                          ts.model.num_parameters()))
    try:
        if writer is not None:
            run.eval_set = run.task.eval_set(config.train.eval_sequences,
                                             config.train.eval_seed)
            if config.study.on:
                run.test_set = run.task.test_set(config.train.eval_seed)
            if req.progress:
                writer.start_progress(config.train.steps, ts.step, f"train {model_name}")
        _loop(run, ts, writer, log_first=ckpt is None)
        if writer is not None:
            writer.close_progress()
            writer.finish(_transition(run, ts.schedule), ts.train_seconds)
    except BaseException as err:
        mapped = (_resource_error(err, run, ts) or _task_error(err, ts.step)
                  or _worker_terminated(err))
        if writer is not None:
            writer.fail(mapped or err, ts.train_seconds)
        if mapped is not None:
            raise mapped from None
        raise
    finally:
        if writer is not None:
            writer.close_progress()
    dist.barrier()
    return out


def _setup(req: _Request, dist: _Dist, ckpt) -> tuple[_Run, TrainState]:
    """Device, task, model and optimiser (restored from ``ckpt`` if given), DDP wrap."""
    model_name, config, seed = req.model_name, req.config, req.seed
    device = pick_device(config.train.device, dist.launch.local_rank)
    if device.type == "cpu":
        torch.set_num_threads(config.train.threads)
    task = req.task if req.task is not None else training_task(SRCD(config.data))
    task = studied(task, config.study, config.train.steps)  # itself unless the protocol is on
    ts = fresh_state(model_name, config, seed, dist.rank, device,
                     spec=DataSpec(**task.data_spec), n_library=task.n_library)
    if ckpt is not None:
        restore(ts, ckpt, dist.rank)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    train_model = ts.model
    if dist.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(
            ts.model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)
    if config.train.compile:  # ts.model stays eager: evaluation, checkpoints (issue 16)
        train_model = torch.compile(train_model)
    tiered = bool(ts.model.consolidates)
    scheduled = tiered or bool(ts.model.follows_routing_schedule)
    return _Run(model_name, config, seed, req.out, device, dist, task, train_model, tiered,
                autocast, scheduled=scheduled), ts


def _loop(run: _Run, ts: TrainState, writer: RunWriter | None, log_first: bool) -> None:
    """Log/checkpoint at every ``log_every`` step, then one training step, until ``steps``.

    Batches are drawn ``train.prefetch`` steps ahead in a thread or a worker process
    (``batches.prefetcher``, issue 16); loss terms stay on the device until a row is logged.
    """
    t = run.config.train
    start = ts.step
    window = _LossWindow()
    batches = prefetcher(step_batches(run), t.prefetch, worker_kind(t.data_worker, run.device),
                         t.steps)
    resident = sync_free(run.device)  # issue 16: no host read-back inside a step
    try:
        while True:
            step = ts.step
            temperature = ts.schedule.temperature(step)  # issue 13: fixed or learned
            lr = t.learning_rate(step)
            if (step % t.log_every == 0 or step == t.steps) and (step != start or log_first):
                if resident and step != start:  # queued steps finish on the training clock
                    t0 = time.perf_counter()
                    if run.device.type == "cuda":
                        torch.cuda.synchronize(run.device)
                    ts.train_seconds += time.perf_counter() - t0
                _log_and_save(run, ts, writer, temperature, lr, window.mean(run.dist))
                window = _LossWindow()  # every rank starts the next averaging window
            if step >= t.steps:
                return
            t0 = time.perf_counter()
            batch_np, counts = batches.get(step)
            if run.train_length is None:
                run.train_length = run.task.sequence_length(batch_np)
            ts.exposures += run.dist.all_sum(counts.astype(float))
            batch = batch_np.to_torch(run.device, non_blocking=resident)
            warm = run.scheduled and ts.schedule.warmup(step)  # issue 13 (matched: gates open)
            window.add(train_step(ts, run.train_model, batch, step, temperature, lr, t,
                                  "episodic" if warm else "none", run.autocast,
                                  dist=run.dist,
                                  signal=run.scheduled and ts.schedule.needs_signal(step),
                                  task=run.task,
                                  resident=resident))
            ts.train_seconds += time.perf_counter() - t0
            ts.step += 1
            if writer is not None:
                writer.advance()
    finally:
        batches.close()


def _log_and_save(run: _Run, ts: TrainState, writer: RunWriter | None, temperature: float,
                  lr: float, losses: dict[str, float]) -> None:
    """One logged row (rank 0) and, when due, a checkpoint; every rank takes part."""
    t, step = run.config.train, ts.step
    _check_finite_loss(run, ts)  # issue 16: the sync-free steps' flag, read here
    _check_finite_weights(run, ts)  # the weights every rank is about to log and save
    if writer is not None:
        writer.log(*_eval_rows(run, ts, temperature, lr, losses))
    if step % t.checkpoint_every == 0 or step == t.steps:
        gens = _generator_states(run, ts)
        if writer is not None:
            save_state(run.out, ts, run.model_name, run.seed, run.config, gens,
                       task_record=run.task_record)
    run.dist.barrier()


def train_step(ts: TrainState, model, batch, step: int, temperature: float, lr: float, cfg_t,
               force: str = "none", autocast=None, dist: _Dist | None = None,
               signal: bool = False, task: Any = None, resident: bool = False
               ) -> dict[str, torch.Tensor]:
    """One optimiser step on ``batch`` (soft routing); returns the loss terms as 0-dim tensors.

    ``task`` (``cram.tasks.view``; SRCD's own hooks when None) gives the loss view of the batch
    and its extra loss terms (``losses.task_loss``).

    ``signal``: also feed the routing schedule's criterion on this batch (issue 13; measured
    before the weights change, applied after the optimiser step is queued; a learned schedule
    reads it back then, a fixed one keeps it on the device). A non-finite loss: by default
    raises :class:`TrainingDiverged` before the backward pass, so the weights stay those of the
    last finite step (the step's one read-back). ``resident`` (issue 16, see ``sync_free``):
    no read-back; the loss's finiteness becomes a sticky device flag, the fused AdamW skips this
    and every later step once it is set, and the next logged row raises.
    """
    ddp = dist is not None and dist.enabled
    for group in ts.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)  # one plain group: no key
    schedule = ts.schedule
    criterion = None
    with autocast if autocast is not None else contextlib.nullcontext():
        # the Gumbel noise is drawn before the forward pass: a compiled model meets no generator
        route = ts.model.with_route_noise(
            Route(temperature=temperature, force=force, generator=ts.gumbel), batch)
        out = model(batch, route)
        task = task if task is not None else SRCD  # SRCD's hooks need no instance
        view = task.loss_view(batch)
        if cfg_t.cost_gate == "replaceable" and (schedule or cfg_t).cost_scale(step) > 0 \
                and any(s.q is not None for s in out.layers):  # a routed model's cost only
            view = {**view, ANSWERED_WITHOUT_ATTENTION: answered_without_attention(
                ts.model, {**batch, "answer": view["answer"]}, IGNORE_INDEX)}  # issue 32
        loss = task_loss(task, out, batch, cfg_t, step, schedule=schedule, view=view)
        if signal and schedule is not None:  # issue 13: the retrieval criterion
            logits = out.value_logits if route.working_keep is None else \
                _logits_without_working_dropout(ts.model, batch, route)
            criterion = _measure_signal(ts.model, {**batch, "answer": view["answer"]},
                                        logits, cfg_t)
        if ddp:  # DDP waits for a gradient from every output it can see; outputs kept only for
            # logging (e.g. router probs in warm-up) join the graph at weight 0
            loss.total = loss.total + 0.0 * _output_sum(out)
    if resident:
        _flag_nonfinite(ts, loss.total, step, ddp)
    elif not bool(torch.isfinite(loss.total)):  # total is the sum of every term: one check
        terms = ", ".join(f"{k}={v:.4g}" for k, v in loss.terms.items())
        raise TrainingDiverged(f"non-finite loss at step {step} ({terms}); "
                               "the last finite checkpoint is kept")
    ts.optimizer.zero_grad(set_to_none=True)
    loss.total.backward()
    if cfg_t.grad_clip:
        torch.nn.utils.clip_grad_norm_(ts.model.parameters(), cfg_t.grad_clip)
    if resident and ts.optimizer.param_groups[0].get("fused"):
        ts.optimizer.found_inf = ts.nonfinite  # the fused kernel skips the update when 1
    ts.optimizer.step()
    if criterion is not None:
        _update_schedule(schedule, *criterion, step, dist)
    return loss.values


def _flag_nonfinite(ts: TrainState, total: torch.Tensor, step: int, ddp: bool) -> None:
    """Set the sticky non-finite flag and its first step on the device (no read-back)."""
    if ts.nonfinite is None:
        ts.nonfinite = total.new_zeros((), dtype=torch.float32)
        ts.nonfinite_step = torch.full((), -1, dtype=torch.int64, device=total.device)
    bad = (~torch.isfinite(total.detach())).to(torch.float32)
    if ddp:  # every rank skips, or none: the replicas must stay equal
        torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
    first = (bad > 0) & (ts.nonfinite_step < 0)
    ts.nonfinite_step = torch.where(first, torch.full_like(ts.nonfinite_step, step),
                                    ts.nonfinite_step)
    ts.nonfinite = torch.maximum(ts.nonfinite, bad)


def _check_finite_loss(run: _Run, ts: TrainState) -> None:
    """Raise :class:`TrainingDiverged` if a sync-free step saw a non-finite loss (issue 16)."""
    if ts.nonfinite is not None and bool(ts.nonfinite > 0):
        raise TrainingDiverged(
            f"non-finite loss at step {int(ts.nonfinite_step)} (the optimiser skipped it and "
            f"every step after it); the last finite checkpoint is kept in "
            f"{run.out / CHECKPOINT_DIR}")


@torch.no_grad()
def _logits_without_working_dropout(model, batch: dict, route: Route) -> torch.Tensor:
    """Value logits (B, T, V) of this step's forward with every CT-ODE output kept.

    The routing criterion asks whether the model retrieves as it will be evaluated, with its
    whole working memory; measured on a forward that dropped some sequences' CT-ODE, it reads
    low and the warm-up would end late or by the maximum wait (``model.working_dropout``).
    """
    keep = tuple(torch.ones_like(k) for k in route.working_keep)  # per layer (B,)
    return model(batch, dataclasses.replace(route, working_keep=keep)).value_logits


def _measure_signal(model, batch, logits, cfg_t) -> tuple[torch.Tensor, torch.Tensor]:
    """The criterion's (hits, count) on this batch, as device tensors (issue 13).

    ``batch["answer"]`` is the loss view's answer (a token task: its labels).
    """
    return measure_criterion(model, batch, logits, IGNORE_INDEX)


def _update_schedule(schedule: RoutingSchedule, hits, count, step: int,
                     dist: _Dist | None) -> None:
    """Update the schedule with this step's criterion counts (issue 13)."""
    ddp = dist is not None and dist.enabled
    if schedule.kind == "learned" or ddp:  # the decision needs the global value now
        counts = torch.stack([hits, count]).cpu()
        if ddp:
            torch.distributed.all_reduce(counts)
        hits, count = float(counts[0]), float(counts[1])
    message = schedule.update(step, hits, count)
    if message and (dist is None or dist.main):
        print(message, file=sys.stderr, flush=True)


class _LossWindow:
    """Running sums of the loss terms since the last logged row, kept on the device (float64)."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.n = 0

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        for k, v in terms.items():
            v = v.detach().double()  # float64, as a host float sum would be
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.n += 1

    def mean(self, dist: _Dist) -> dict[str, float]:
        """Per-step mean of every term (under DDP: of the global batch); one read-back."""
        if not self.sums:
            return {}
        keys = list(self.sums)
        values = torch.stack([self.sums[k] for k in keys]).cpu().numpy()
        if dist.enabled:
            values = dist.all_sum(values) / dist.world
        return {k: float(v) / max(self.n, 1) for k, v in zip(keys, values.tolist(), strict=True)}


def _eval_rows(run: _Run, ts: TrainState, temperature: float, lr: float,
               losses: dict[str, float]) -> tuple[dict, list[dict], list[dict], list[dict]]:
    """Evaluate on the fixed set: the metrics row, the pattern, retention and forgetting rows."""
    t, step = run.config.train, ts.step
    # tokens per training sequence (a task's eval sequences may be longer or shorter)
    length = run.train_length
    ev = evaluate(
        ts.model, run.eval_set, t.eval_batch_size, run.device, task=run.task,
        patterns=run.tiered and step % t.pattern_every == 0,
        retention=step in retention_steps(run.config), autocast=run.autocast)
    row = {"step": step, "phase": ts.schedule.phase_at(step),  # issue 13
           "schedule_signal": ts.schedule.signal,
           "tokens_seen": step * t.batch_size * (length or 0),
           "train_seconds": ts.train_seconds, "temperature": temperature, "lr": lr,
           **losses, **ev.metrics}
    patterns = [{"step": step, "exposures": int(ts.exposures[r["pattern"]]), **r}
                for r in ev.pattern_rows]
    return (row, patterns, [{"step": step, **r} for r in ev.retention_rows],
            _forgetting(run, ts))


def _forgetting(run: _Run, ts: TrainState) -> list[dict]:
    """The study protocol's test rows when one is due (every ``pattern_every`` and the end)."""
    t, step = run.config.train, ts.step
    if run.test_set is None or (step % t.pattern_every and step != t.steps):
        return []
    results = probe_bindings(ts.model, run.test_set, run.task, t.eval_batch_size, run.device,
                             run.autocast)
    return forgetting_rows(results, run.task.schedule, step, t.batch_size)


def _check_finite_weights(run: _Run, ts: TrainState) -> None:
    bad = [n for n, p in ts.model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise TrainingDiverged(
            f"non-finite weights after step {ts.step} ({len(bad)} tensors, e.g. {bad[0]}); "
            f"the last finite checkpoint is kept in {run.out / CHECKPOINT_DIR}")


def _generator_states(run: _Run, ts: TrainState) -> list[torch.Tensor]:
    """Every rank's Gumbel generator state (gathered to all ranks under DDP)."""
    gens = [ts.gumbel.get_state()]
    if run.dist.enabled:
        local = gens[0].to(run.device) if run.device.type == "cuda" else gens[0]
        gathered = [torch.empty_like(local) for _ in range(run.dist.world)]
        torch.distributed.all_gather(gathered, local)
        gens = [g.cpu() for g in gathered]
    return gens


def _transition(run: _Run, schedule: RoutingSchedule) -> dict:
    """transition.json: library-query attention's change point, and the schedule block.

    The change point is found for routed models only; the schedule block (issue 13) says where
    warm-up ended and why.
    """
    t = run.config.train
    if run.tiered:
        onset = schedule.onset() if schedule.onset() is not None else t.steps  # issue 13
        summary = transition_summary(read_table(run.out / METRICS_FILE)[0], onset, seed=run.seed)
    else:
        summary = {"series": "attention_library", "onset": t.warmup_steps, "step": None,
                   "method": "not a routed model"}
    return {**summary, "schedule": schedule.summary(),  # issue 13
            "resolution": t.log_every}  # steps between evaluations


def _worker_terminated(err: BaseException) -> Terminated | None:
    """The data worker killed by SIGTERM, seen before this process's own SIGTERM: terminated.

    A SIGTERM to the process group reaches the worker process too; if it dies of it before its
    handler is installed, the DataLoader's SIGCHLD handler raises a RuntimeError in the main
    thread, which can come first. Either way the run was terminated (exit 143, ``interrupted``).
    """
    if isinstance(err, RuntimeError) and "killed by signal: Terminated" in str(err):
        return Terminated("SIGTERM")
    return None


def _task_error(err: BaseException, step: int) -> TaskError | None:
    """A user task's failure during training, named as the task's with the step (else None).

    From a worker process the DataLoader re-raises it with the worker's traceback in the
    message; the task's own line is the last one.
    """
    if not isinstance(err, TaskError):
        return None
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    text = lines[-1] if lines else type(err).__name__
    if text.startswith(("cram.tasks.batch.", "TaskError", "TaskBatchError")):
        text = text.split(": ", 1)[-1]
    return type(err)(f"{text} (at training step {step}); the task's code, not cram, failed")


def _resource_error(err: BaseException, run: _Run, ts: TrainState) -> OutOfResources | None:
    """Out-of-memory, disk-full and other I/O errors as one-line :class:`OutOfResources`."""
    where = f"at step {ts.step}; the last checkpoint in {run.out / CHECKPOINT_DIR} is kept"
    oom = isinstance(err, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(err, RuntimeError) and "can't allocate memory" in str(err))
    if oom:
        return OutOfResources(f"out of memory on {run.device} {where}; lower train.batch_size "
                              "or data.length, then --resume")
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        name = f" writing {err.filename}" if err.filename else ""
        return OutOfResources(f"no space left on device{name} {where}; free space, then --resume")
    if isinstance(err, OSError) and err.errno is not None:
        name = f" on {err.filename}" if err.filename else ""
        return OutOfResources(f"{err.strerror or 'I/O error'}{name} {where}; fix it, then --resume")
    return None


def _output_sum(out) -> torch.Tensor:
    """Sum of every floating tensor in a ModelOutput that requires grad (for DDP; times zero)."""
    total = out.value_logits.new_zeros(())
    stack = [out]
    while stack:
        obj = stack.pop()
        if isinstance(obj, torch.Tensor):
            if obj.requires_grad and obj.is_floating_point():
                total = total + obj.float().sum()
        elif dataclasses.is_dataclass(obj):
            stack.extend(getattr(obj, f.name) for f in dataclasses.fields(obj))
        elif isinstance(obj, (list, tuple)):
            stack.extend(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.values())
    return total
