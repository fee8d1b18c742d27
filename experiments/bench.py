"""Experiments behind ``cram bench``: SRCD comparison, transfer, recurrence sweep, inference timing.

Every experiment trains real runs (resuming finished or partial ones in its runs folder), reads them
back through ``cram.core.runs.load_run``, and returns one row per model and seed. Nothing here is
hard-coded: each number is measured in the same invocation or read from a run this module trained.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np

from cram.core.errors import ConfigError

DEFAULT_MODELS = ("cram", "cram-logit-router", "cram-raw-q", "cram-no-consolidation",
                  "cram-oracle-q", "cram-static", "transformer", "sliding-window", "ct-only",
                  "static-hybrid", "mod", "seqboat")


def ensure_run(model: str, preset: str, seed: int, run_dir: Path, overrides: list[str],
               progress: bool = True, task: str | None = None, task_args=()) -> Path:
    """Train ``run_dir`` unless it already holds this finished run (a partial one is resumed).

    ``task``: a token task spec (``cram bench srcd --task``) instead of SRCD. A cached folder is
    reused only if its config.json is the experiment asked for (model, seed, every resolved
    config field, the task's identity: ``cram.core.identity``); another configuration in the
    same folder is refused in one line, never reported as this one's.
    """
    from cram.consolidation.api import asked_record, train
    from cram.core.identity import check_same_experiment
    from cram.core.runs import CONFIG_FILE, META_FILE, read_json

    run_dir = Path(run_dir)
    if (run_dir / CONFIG_FILE).is_file():
        asked = asked_record(model, preset, seed, overrides, task, task_args)
        # raises on another configuration; else resume or reuse below
        check_same_experiment(asked, read_json(run_dir / CONFIG_FILE),
                              expected_name="this bench", found_name="the cached run",
                              where=str(run_dir),
                              hint="use another runs folder for another configuration")
        meta = read_json(run_dir / META_FILE) if (run_dir / META_FILE).is_file() else {}
        if meta.get("status") == "finished":
            return run_dir
        return train(model, out=run_dir, task=task, task_args=task_args, preset=preset,
                     seed=seed, resume=True, progress=progress)
    restart = run_dir.is_dir() and any(run_dir.iterdir())  # created, never configured
    return train(model, out=run_dir, task=task, task_args=task_args, preset=preset, seed=seed,
                 overrides=overrides, progress=progress, restart=restart)


#: metrics a token-task run adds to a ``cram bench srcd --task`` row
TOKEN_ROW_KEYS = ("attention_token", "attention_nonquery", "floor", "attention_over_floor")


def attention_reduction(run, n_library_queries: int | None = None,
                        n_tokens: int | None = None) -> dict:
    """``reduction`` (library-query attention: peak after warm-up / end) and the all-token one.

    When the end value is below the evaluation's resolution (one library query, or one
    (token, layer) pair), the resolution is used instead, so the ratio is a finite lower bound.
    ``n_library_queries`` / ``n_tokens``: library queries and tokens of the evaluation set when
    counted (a token task's differ from SRCD's expected counts, the defaults).
    """
    m = run.metrics
    cfg = run.config
    n_eval = cfg["train"]["eval_sequences"]
    length = cfg["data"]["length"]
    if n_library_queries is None:
        n_queries = n_eval * max(1, round(cfg["data"]["query_rate"] * length))
        n_library_queries = n_queries * cfg["data"]["library_share"]
    lib_resolution = 1.0 / max(1.0, n_library_queries)
    n_tokens = n_eval * length if n_tokens is None else n_tokens
    tok_resolution = 1.0 / (n_tokens * cfg["model_config"]["n_layers"])
    after = m[m["step"] >= run.warmup_steps]
    peak = float(after["attention_library"].max()) if len(after) else float("nan")
    end = float(m["attention_library"].iloc[-1])
    start_all = float(m["attention_fraction"].iloc[0])
    end_all = float(m["attention_fraction"].iloc[-1])
    return {
        "reduction": peak / max(end, lib_resolution) if peak > 0 else float("nan"),
        "reduction_is_lower_bound": bool(end < lib_resolution),
        "reduction_all_tokens": (start_all / max(end_all, tok_resolution) if start_all > 0
                                 else float("nan")),
        "reduction_all_tokens_is_lower_bound": bool(end_all < tok_resolution),
    }


def inference_ms_per_sequence(run_dir: Path, length: int = 2048, n_sequences: int = 3,
                              threads: int = 1, seed: int = 123, device: str = "cpu") -> dict:
    """Hard-routed inference time of a trained run's model: batch 1, ``threads`` threads.

    Returns the median ms per sequence and the retrieval accuracy at that length, on ``device``
    (each timed forward ends with a CUDA synchronisation there).
    """
    import torch

    from cram.consolidation.checkpoint import load_trained
    from cram.kernels._common import sync_device
    from cram.models import HARD
    from cram.tasks.srcd_stream import EVENT_QUERY, SRCD

    device = torch.device(device)
    model, config, _ = load_trained(run_dir)
    model.to(device).eval()
    data_cfg = dataclasses.replace(config.data, length=length)
    batch = SRCD(data_cfg).sample(n_sequences + 1, seed)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    times, correct, total, attn = [], 0, 0, []
    try:
        with torch.inference_mode():
            for i in range(n_sequences + 1):  # the first is a warm-up, not timed
                b = batch.slice(i, i + 1).to_torch(device)
                t0 = time.perf_counter()
                out = model(b, HARD)
                sync_device(device)
                elapsed = time.perf_counter() - t0
                if i == 0:
                    continue
                times.append(elapsed)
                query = b["event"] == EVENT_QUERY
                correct += int((out.value_logits.argmax(-1) == b["answer"])[query].sum())
                total += int(query.sum())
                attn.append(float(np.mean([s.episodic.float().mean().item() for s in out.layers])))
    finally:
        torch.set_num_threads(old_threads)
    return {"infer_ms_per_seq": 1000 * float(np.median(times)), "infer_length": length,
            "infer_acc": correct / max(total, 1), "infer_attention_fraction": float(np.mean(attn))}


def schedule_decision(transition: dict) -> dict:
    """Where the routing schedule ended warm-up and which rule ended it (issue 32).

    Both are None for a model without routing (its schedule decides nothing).
    """
    schedule = transition.get("schedule") or {}
    if transition.get("method") == "not a routed model":
        return {"warmup_end": None, "warmup_ended_by": None}
    return {"warmup_end": schedule.get("warmup_end"), "warmup_ended_by": schedule.get("fired_by")}


def srcd_row(model: str, seed: int, run_dir: Path, infer_length: int | None) -> dict:
    """One ``cram bench srcd`` row: final metrics, transition and reductions of a trained run."""
    from cram.core.runs import load_run

    run = load_run(run_dir)
    last = run.metrics.iloc[-1]
    tr = run.transition or {}
    row = {"model": model, "seed": seed,
           **{k: float(last[k]) for k in ("retrieval_acc", "retrieval_acc_library",
                                          "retrieval_acc_novel", "attention_fraction",
                                          "dynamics_mse", "attention_computed")},
           "train_seconds": float(run.meta.get("train_seconds", float("nan"))),
           "attention_library_queries": float(last["attention_library"]),
           "attention_novel_queries": float(last["attention_novel"]),
           **schedule_decision(tr),
           "transition_step": tr.get("step"), "transition_low": tr.get("low"),
           "transition_high": tr.get("high"),
           "familiarity_rise_step": run.familiarity_rise_step,
           "lag_after_familiarity": tr.get("lag_after_familiarity"),
           **{k: float(last[k]) for k in ("q_library", "q_novel", "qhat_library", "qhat_novel",
                                          "acc_library_semantic_only") if k in last},
           **{k: float(last[k]) for k in TOKEN_ROW_KEYS if k in last},
           # the paper's unit: tokens that any layer sends to attention (attention_fraction is
           # per (token, layer) pair)
           **({"attention_per_token": float(last["attention_tokens"])}
              if "attention_tokens" in last else {}),
           "run": str(run_dir)}
    row.update(attention_reduction(run))
    if infer_length:
        row.update(inference_ms_per_sequence(run_dir, length=infer_length))
    else:
        row["infer_ms_per_seq"] = float("nan")
    return row


def mean_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and a t-interval; with one value the interval is (nan, nan)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], float)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)


def summarize(rows: list[dict], keys=("retrieval_acc", "retrieval_acc_library",
                                      "retrieval_acc_novel", "attention_fraction",
                                      "attention_per_token", "attention_library_queries",
                                      "dynamics_mse", "infer_ms_per_seq")) -> list[dict]:
    """One row per model: the mean over seeds of each key and its 95% t-interval.

    The library-query reduction, when the rows have one, gets :func:`ratio_summary` instead.
    """
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        s = {"model": model, "seeds": len(mine)}
        for k in keys:
            mean, low, high = mean_interval([r.get(k) for r in mine])
            s[k] = mean
            s[f"{k}_ci95"] = f"[{low:.4g}, {high:.4g}]" if np.isfinite(low) else ""
        if any("reduction" in r for r in mine):
            s.update(ratio_summary(mine))
        out.append(s)
    return out


def ratio_summary(rows: list[dict], key: str = "reduction") -> dict:
    """Median, range and count of lower bounds of a peak/end ratio over seeds.

    Where the end value is below one query the ratio is only a lower bound, so a t-interval
    of it says nothing: ``{key}_median``, ``{key}_range``, ``{key}_lower_bounds``.
    """
    x = np.array([r[key] for r in rows if np.isfinite(r.get(key, np.nan))], float)
    return {f"{key}_median": float(np.median(x)) if x.size else math.nan,
            f"{key}_range": f"{x.min():.3g}-{x.max():.3g}" if x.size else "",
            f"{key}_lower_bounds": sum(bool(r.get(f"{key}_is_lower_bound")) for r in rows)}


def check_models(models: list[str]) -> None:
    """Raise ConfigError for an empty list or an unknown model name."""
    from cram.models import check_model_name

    if not models:
        raise ConfigError("--models: give at least one model")
    for m in models:
        check_model_name(m)


def finished_same_run(run_dir: Path, model: str, preset: str, seed: int,
                      overrides: list[str]) -> bool:
    """Whether ``run_dir`` holds a finished run of exactly this experiment (shared caches)."""
    from cram.consolidation.api import asked_record
    from cram.core.identity import experiment_identity, identity_differences
    from cram.core.runs import CONFIG_FILE, META_FILE, read_json

    run_dir = Path(run_dir)
    if not ((run_dir / CONFIG_FILE).is_file() and (run_dir / META_FILE).is_file()):
        return False
    if read_json(run_dir / META_FILE).get("status") != "finished":
        return False
    asked = experiment_identity(asked_record(model, preset, seed, overrides))
    return not identity_differences(asked, experiment_identity(read_json(run_dir / CONFIG_FILE)))


def _find_trained(root: Path, model: str) -> Path | None:
    from cram.core.runs import CHECKPOINT_DIR

    for d in sorted(root.glob(f"{model}-seed*")):
        if (d / CHECKPOINT_DIR / "last.pt").is_file():
            return d
    return None


def model_step_ms(run_dir: Path, length: int = 2048, batch_size: int = 1, repeats: int = 3,
                  threads: int = 1, seed: int = 123, device: str = "cpu") -> float:
    """Median ms of one training step (soft routing, forward, backward, AdamW) of a run's model."""
    import torch

    from cram.consolidation.checkpoint import load_trained
    from cram.tasks.srcd_stream import SRCD

    from .timing import train_step_ms

    model, config, _ = load_trained(run_dir)
    model.to(torch.device(device)).train()
    data = dataclasses.replace(config.data, length=length)
    batch = SRCD(data).sample(batch_size, seed).to_torch(torch.device(device))
    return train_step_ms(model, batch, config.train, temperature=config.train.tau_end,
                         loss_step=config.train.steps, lr=1e-4, repeats=repeats, seed=seed,
                         threads=threads)


def model_timing_rows(runs_root: str | None = None, threads: int = 1, quick: bool = False,
                      length: int = 2048, device: str | None = None) -> list[dict]:
    """``model_infer`` / ``model_step`` rows: trained, consolidated CRAM vs the dense Transformer.

    Uses trained runs from ``cram bench srcd`` (never a forced routing ratio); returns no rows (and
    says so) when none exist yet. ``device``: None = CUDA when present, else the CPU with
    ``threads`` threads; each row names the device it was timed on.
    """
    import sys

    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    roots = [Path(runs_root)] if runs_root else [Path("runs/bench-srcd-cpu"),
                                                 Path("runs/bench-srcd-demo")]
    for root in roots:
        cram_dir, dense_dir = _find_trained(root, "cram"), _find_trained(root, "transformer")
        if cram_dir and dense_dir:
            break
    else:
        print("[bench kernels] no trained cram + transformer runs found (run `cram bench srcd` "
              "first); skipping model-level rows", file=sys.stderr)
        return []
    n = 2 if quick else 5
    timing = {"length": length, "threads": threads, "device": device}
    cram_inf = inference_ms_per_sequence(cram_dir, n_sequences=n, **timing)
    dense_inf = inference_ms_per_sequence(dense_dir, n_sequences=n, **timing)
    where = {"run": str(cram_dir), "dense_run": str(dense_dir), "threads": threads,
             "device": device}
    rows = [{"op": "model_infer", "T": length, "p": cram_inf["infer_attention_fraction"],
             "ms": cram_inf["infer_ms_per_seq"], "dense_ms": dense_inf["infer_ms_per_seq"],
             "ratio": cram_inf["infer_ms_per_seq"] / dense_inf["infer_ms_per_seq"],
             "acc": cram_inf["infer_acc"], "dense_acc": dense_inf["infer_acc"], **where}]
    reps = 1 if quick else 3
    cram_step = model_step_ms(cram_dir, repeats=reps, **timing)
    dense_step = model_step_ms(dense_dir, repeats=reps, **timing)
    rows.append({"op": "model_step", "T": length, "p": 1.0, "ms": cram_step, "dense_ms": dense_step,
                 "ratio": cram_step / dense_step, **where,
                 "note": "training uses soft routing, so attention is computed for every token"})
    return rows
