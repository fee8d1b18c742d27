"""One readable training loop that writes a self-describing, crash-safe run folder.

``train(model_name, config, out, seed)`` trains any registered model on an endless SRCD stream,
evaluates it with hard routing on a fixed evaluation set every ``log_every`` steps, and writes the
run folder described in docs/run_folder.md. Under ``torchrun`` it trains with DistributedDataParallel
(gloo on CPU, NCCL on CUDA): each rank draws its own seeded stream, and only rank 0 evaluates, logs
and checkpoints.

Crash safety: rows are appended with fsync *before* the checkpoint of the same step is written, and
``resume`` truncates every table back to the checkpoint's step, so a run killed at any instant and
resumed loses and duplicates no row; on CPU with a seed it ends with the same metrics as an
uninterrupted run (the data stream is a function of (seed, rank, step), and all RNG state is saved).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cram.core.errors import CramError, RunFolderError
from cram.models import DataSpec, build_model
from cram.core.runs import (
    CHECKPOINT_DIR, CONFIG_FILE, META_FILE, METRICS_FILE, PATTERNS_FILE, RETENTION_FILE,
    SCHEMA_VERSION, TRANSITION_FILE, CsvLog, atomic_write_json,
)

from .checkpoint import load_checkpoint, save_checkpoint
from .config import ExperimentConfig
from .evaluate import evaluate
from .layer_metrics import layer_metric_columns  # issue 13
from .losses import compute_loss
from .routing_schedule import RoutingSchedule, measure_criterion  # issue 13
from .srcd import IGNORE_INDEX, SRCD, SRCDBatch, stream_rng
from .transition import transition_summary

LOSS_COLUMNS = ("loss_total", "loss_value", "loss_signal", "loss_consolidation", "loss_familiarity",
                "loss_cost", "loss_router", "loss_probe", "loss_aux")
EVAL_COLUMNS = ("attention_fraction", "attention_computed", "attention_query", "attention_library",
                "attention_novel", "attention_nonquery", "retrieval_acc", "retrieval_acc_library",
                "retrieval_acc_novel", "dynamics_mse", "q_library", "q_novel", "qhat_library",
                "qhat_novel", "acc_library_semantic_only", "acc_library_working_only")


class TrainingDiverged(CramError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def metric_columns(n_layers: int) -> list[str]:
    tiers = [f"share_{t}_l{i}" for i in range(n_layers) for t in ("working", "episodic", "semantic")]
    return ["step", "phase", "tokens_seen", "train_seconds", "temperature", "lr",
            "schedule_signal", *LOSS_COLUMNS,  # issue 13: the routing criterion's EMA
            *EVAL_COLUMNS, *layer_metric_columns(n_layers), *tiers]  # issue 13: per-layer


def pick_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _library_versions() -> dict:
    import importlib.metadata as md

    versions = {}
    for name in ("torch", "numpy", "pandas", "scipy", "triton"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return versions


class _Dist:
    """Rank, world size and the process group under torchrun; a no-op in a single process."""

    def __init__(self, device_kind: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.enabled = self.world > 1
        if self.enabled and not torch.distributed.is_initialized():
            backend = "nccl" if device_kind == "cuda" else "gloo"
            torch.distributed.init_process_group(backend)

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

    def broadcast_flag(self, flag: bool) -> bool:
        if not self.enabled:
            return flag
        t = torch.tensor([1 if flag else 0])
        torch.distributed.broadcast(t, 0)
        return bool(t.item())

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _retention_steps(cfg) -> set[int]:
    t = cfg.train
    stages = {min(t.warmup_steps, t.steps)} if t.warmup_steps else set()
    if t.retention_stages:
        for x in np.linspace(t.warmup_steps, t.steps, t.retention_stages + 1)[1:]:
            stages.add(int(round(x / t.log_every) * t.log_every))
    stages.add(t.steps)
    return {min(s, t.steps) for s in stages}


def train(model_name: str, config: ExperimentConfig, out: str | os.PathLike, seed: int = 0,
          preset: str = "custom", resume: bool = False, argv: list[str] | None = None,
          progress: bool = True) -> Path:
    """Train ``model_name`` and write the run folder ``out``; return its path."""
    out = Path(out)
    device = pick_device(config.train.device)
    dist = _Dist(device.type)
    try:
        return _train(model_name, config, out, seed, preset, resume, argv, progress, device, dist)
    finally:
        dist.close()


def _train(model_name, config, out, seed, preset, resume, argv, progress, device, dist) -> Path:
    if resume:
        if not (out / CONFIG_FILE).is_file():
            raise RunFolderError(f"{out}: nothing to resume (no {CONFIG_FILE})")
        import json

        saved = json.loads((out / CONFIG_FILE).read_text())
        if saved.get("model") != model_name:
            raise RunFolderError(f"{out}: run was trained as {saved.get('model')!r}, "
                                 f"not {model_name!r}")
        config = ExperimentConfig.from_dict(saved)
        seed = int(saved.get("seed", seed))
        preset = saved.get("preset", preset)
        state = load_checkpoint(out / CHECKPOINT_DIR / "last.pt", expect_model=model_name)
    else:
        if out.exists() and any(out.iterdir()):
            raise RunFolderError(f"{out}: already exists; refusing to overwrite "
                                 "(use --resume to continue it, or another --out)")
        state = None
    dist.barrier()
    cfg_t = config.train
    if device.type == "cpu":
        torch.set_num_threads(cfg_t.threads)
    gen = SRCD(config.data)
    spec = DataSpec(config.data.n_keys, config.data.n_values, config.data.key_encoding,
                    config.data.key_dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(model_name, config.model, spec).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg_t.lr, weight_decay=cfg_t.weight_decay)
    gumbel = torch.Generator(device=device).manual_seed(seed * 1000 + 7 + dist.rank)
    start_step = 0
    exposures = np.zeros(config.data.n_library)
    train_seconds = 0.0
    schedule = RoutingSchedule(cfg_t)  # issue 13
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if dist.rank < len(state["generator_states"]):
            gumbel.set_state(state["generator_states"][dist.rank].to("cpu"))
        start_step = int(state["step"])
        exposures = np.asarray(state["exposures"], float)
        train_seconds = float(state["train_seconds"])
        if "routing_schedule" in state:  # issue 13
            schedule.load_state_dict(state["routing_schedule"])
    train_model = model
    if dist.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)
    is_cram = getattr(model, "family", "") == "cram"
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())

    # ---------------------------------------------------------------- run folder (rank 0 only)
    ckpt_dir = out / CHECKPOINT_DIR
    metrics_log = patterns_log = retention_log = None
    meta = {}
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        record = {"model": model_name, "preset": preset, "seed": seed, **config.to_dict()}
        if not resume:
            atomic_write_json(out / CONFIG_FILE, record)
        meta = {"schema_version": SCHEMA_VERSION, "command": argv or sys.argv,
                "cram_version": _cram_version(), "git_commit": _git_commit(),
                "libraries": _library_versions(), "device": str(device), "world_size": dist.world,
                "status": "running", "train_seconds": train_seconds,
                "parameters": model.num_parameters(),
                "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        atomic_write_json(out / META_FILE, meta)
        metrics_log = CsvLog(out / METRICS_FILE, metric_columns(config.model.n_layers))
        patterns_log = CsvLog(out / PATTERNS_FILE, ["step", "pattern", "exposures",
                                                    "episodic_share", "q", "qhat", "n_queries"])
        retention_log = CsvLog(out / RETENTION_FILE, ["step", "condition", "binding", "lag",
                                                      "lag_high", "n", "correct", "accuracy"])
        if resume:
            for log in (metrics_log, patterns_log, retention_log):
                log.truncate_after(start_step)
        eval_set = gen.eval_set(cfg_t.eval_sequences, cfg_t.eval_seed)
    retention_at = _retention_steps(config)
    shards = dist.world if dist.enabled else cfg_t.data_shards
    if cfg_t.batch_size % shards:
        raise CramError(f"train.batch_size={cfg_t.batch_size} is not divisible by "
                        f"{shards} {'ranks' if dist.enabled else 'data_shards'}")
    per_shard = cfg_t.batch_size // shards

    def draw_batch(step: int):
        """Batch ``step``: rank r's shard is a function of (seed, r, step) only."""
        ranks = [dist.rank] if dist.enabled else range(shards)
        return SRCDBatch.concat([gen.sample(per_shard, stream_rng(seed, r, step)) for r in ranks])
    sums: dict[str, float] = {}
    n_summed = 0

    def log_row(step: int, temperature: float, lr: float) -> None:
        ev = evaluate(model, eval_set, cfg_t.eval_batch_size, device,
                      n_library=config.data.n_library,
                      patterns=is_cram and step % cfg_t.pattern_every == 0,
                      retention=step in retention_at, autocast=autocast)
        row = {"step": step, "phase": schedule.phase_at(step),  # issue 13
               "schedule_signal": schedule.signal,
               "tokens_seen": step * cfg_t.batch_size * config.data.length,
               "train_seconds": train_seconds, "temperature": temperature, "lr": lr,
               **{k: v / max(n_summed, 1) for k, v in sums.items()}, **ev.metrics}
        metrics_log.append({k: v for k, v in row.items() if k in metrics_log.columns})
        if ev.pattern_rows:
            patterns_log.append([{"step": step, "exposures": int(exposures[r["pattern"]]), **r}
                                 for r in ev.pattern_rows])
        if ev.retention_rows:
            retention_log.append([{"step": step, **r} for r in ev.retention_rows])
        if bar is not None:
            bar.set_postfix(attn=f"{ev.metrics['attention_fraction']:.3f}",
                            lib=f"{ev.metrics['attention_library']:.2f}",
                            acc=f"{ev.metrics['retrieval_acc']:.2f}")

    def checkpoint(step: int) -> None:
        gens = [gumbel.get_state()]
        if dist.enabled:
            gathered = [torch.empty_like(gens[0]) for _ in range(dist.world)]
            torch.distributed.all_gather(gathered, gens[0].to(device) if device.type == "cuda"
                                         else gens[0])
            gens = [g.cpu() for g in gathered]
        if dist.main:
            save_checkpoint(ckpt_dir, {
                "model_name": model_name, "model_args": model.model_args(),
                "experiment": {"model": model_name, "seed": seed, **config.to_dict()},
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "generator_states": gens, "exposures": torch.as_tensor(exposures),
                "train_seconds": train_seconds, "torch_version": str(torch.__version__),
                "routing_schedule": schedule.state_dict()})  # issue 13

    bar = None
    if dist.main and progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg_t.steps, initial=start_step, desc=f"train {model_name}",
                   file=sys.stderr, dynamic_ncols=True)
    step = start_step
    model.train()
    try:
        while True:
            temperature = schedule.temperature(step)  # issue 13
            lr = cfg_t.lr * min(1.0, (step + 1) / max(cfg_t.lr_warmup_steps, 1))
            if step % cfg_t.log_every == 0 or step == cfg_t.steps:
                if step != start_step or not resume:
                    if dist.enabled and sums:  # log the global-batch mean of every loss term
                        keys = sorted(sums)
                        reduced = dist.all_sum(np.array([sums[k] for k in keys])) / dist.world
                        sums = dict(zip(keys, reduced.tolist()))
                    if dist.main:
                        log_row(step, temperature, lr)
                    sums, n_summed = {}, 0  # every rank starts the next averaging window
                    if step % cfg_t.checkpoint_every == 0 or step == cfg_t.steps:
                        checkpoint(step)
                    dist.barrier()
            if step >= cfg_t.steps:
                break
            t0 = time.perf_counter()
            batch_np = draw_batch(step)
            counts = np.bincount(batch_np.pattern[batch_np.pattern >= 0],
                                 minlength=config.data.n_library)
            exposures += dist.all_sum(counts.astype(float))
            batch = batch_np.to_torch(device)
            for group in optimizer.param_groups:
                group["lr"] = lr
            force = "episodic" if (is_cram and schedule.warmup(step)) else "none"  # issue 13
            with autocast:
                out_ = train_model(batch, mode="soft", temperature=temperature, force=force,
                                   generator=gumbel)
                loss = compute_loss(out_, batch, cfg_t, step, schedule=schedule)  # issue 13
                if is_cram and schedule.needs_signal(step):  # issue 13: retrieval criterion
                    counts = dist.all_sum(np.array(measure_criterion(
                        model, batch, out_.value_logits, cfg_t.schedule_criterion, IGNORE_INDEX)))
                    message = schedule.update(step, *counts)
                    if message and dist.main:
                        print(message, file=sys.stderr, flush=True)
                if dist.enabled:  # DDP waits for a gradient from every output it can see; outputs
                    # kept only for logging (e.g. router probs in warm-up) join the graph at weight 0
                    loss.total = loss.total + 0.0 * _output_sum(out_)
            if not torch.isfinite(loss.total):
                raise TrainingDiverged(
                    f"non-finite loss at step {step} ({', '.join(f'{k}={v:.4g}' for k, v in loss.terms.items())}); "
                    f"the last good checkpoint is kept in {ckpt_dir}")
            optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            if cfg_t.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg_t.grad_clip)
            optimizer.step()
            train_seconds += time.perf_counter() - t0
            for k, v in loss.terms.items():
                sums[k] = sums.get(k, 0.0) + v
            n_summed += 1
            step += 1
            if bar is not None:
                bar.update(1)
    except BaseException as err:
        if dist.main:
            meta.update(status="failed", error=f"{type(err).__name__}: {err}",
                        train_seconds=train_seconds)
            atomic_write_json(out / META_FILE, meta)
        raise
    finally:
        if bar is not None:
            bar.close()
    if dist.main:
        import pandas as pd

        metrics = pd.read_csv(out / METRICS_FILE)
        onset = schedule.onset() if schedule.onset() is not None else cfg_t.steps  # issue 13
        transition = transition_summary(metrics, onset, seed=seed) if is_cram \
            else {"series": "attention_library", "onset": cfg_t.warmup_steps, "step": None,
                  "method": "not a routed model"}
        atomic_write_json(out / TRANSITION_FILE, {
            **transition, "schedule": schedule.summary(),  # issue 13
            "resolution": cfg_t.log_every})  # steps between evaluations: the interval's granularity
        meta.update(status="finished", train_seconds=train_seconds,
                    finished=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        atomic_write_json(out / META_FILE, meta)
    dist.barrier()
    return out


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


def _cram_version() -> str:
    from cram import __version__

    return __version__
