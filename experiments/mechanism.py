"""``cram bench mechanism``: is consolidation what makes CRAM drop attention? Issue 15.

One table per task. Rows are trained runs (models × seeds, reused through
:func:`cram.experiments.bench.ensure_run`); each row carries the run's final routing numbers and
the library accuracy of the same weights under three evaluation-only ablations (a
:class:`cram.models.Route` each, never used in training):

- ``semantic_zeroed``: the router's choice is kept, the semantic tier's output is zeroed;
- ``forced_working``: every layer routed to working memory (no retrieval at all);
- ``forced_attention``: every layer reads episodic memory at every token.

Models (``MECHANISM_MODELS``): the 2×2 of consolidation loss on/off × attention cost gated by q̂ or
not (``cram``, ``cram-ungated``, ``cram-no-consolidation``, ``cram-no-consolidation-ungated``) and
two baselines charged like CRAM (``seqboat-matched``: the same λ on the attention share, warm-up
and ramp; ``mod-matched``: capacity at the novel-query floor of the task's data).

Tasks (``TASKS``): ``srcd-id``, ``srcd-vector`` (familiarity must be learned from key vectors),
``srcd-permuted`` / ``srcd-unlabelled`` (the readout shortcut closed:
``data.library_answer=permuted`` or ``unlabelled``, docs/srcd.md), ``srcd-unlabelled-vector``
(both: the demo, cpu and paper presets' own task since issue 28) and every built-in token task
of ``cram tasks`` (``recall-unmarked``, ``recall-marked``, ``phrases``), trained through
``--task NAME`` with the bench's ``--task-arg`` values. On a token task "gated" is the token
default ``train.cost_gate=replaceable`` (before 2026-12-06: ``familiarity-queries``) and
"ungated" ``none``; a query is a scored token
(label ≠ -100) and a library query one whose ``pattern`` is ≥ 0.

The timing table (:func:`timing_rows`) lives here too: the same trained weights forced dense is the
fair reference for CRAM's time, interleaved with the other models, with bootstrap intervals and
the machine's load recorded.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from cram.core.errors import ConfigError

MECHANISM_MODELS = ("cram", "cram-ungated", "cram-no-consolidation",
                    "cram-no-consolidation-ungated", "seqboat-matched", "mod-matched")
#: the 2×2: model → (consolidation loss on, cost gated by q̂)
GRID = {"cram": (True, True), "cram-ungated": (True, False),
        "cram-no-consolidation": (False, True), "cram-no-consolidation-ungated": (False, False)}
#: task name → the ``--set`` overrides that make it (applied before the user's own)
#: (explicit in both fields, so a task means the same on every preset: since issue 28 the demo,
#: cpu and paper presets train on ``srcd-unlabelled-vector``; the ``*-labelled`` presets on
#: ``srcd-id``)
TASKS: dict[str, tuple[str, ...]] = {
    "srcd-id": ("data.key_encoding=id", "data.library_answer=fixed"),
    "srcd-vector": ("data.key_encoding=vector", "data.library_answer=fixed"),
    "srcd-permuted": ("data.key_encoding=id", "data.library_answer=permuted"),
    "srcd-unlabelled": ("data.key_encoding=id", "data.library_answer=unlabelled"),
    "srcd-unlabelled-vector": ("data.key_encoding=vector", "data.library_answer=unlabelled"),
}
#: ablation name → Route keywords (hard routing; ``semantic_zeroed`` only for CRAM models)
ABLATIONS = (("normal", {}), ("semantic_zeroed", {"ablate": "semantic"}),
             ("forced_working", {"force": "working"}), ("forced_attention", {"force": "episodic"}))
TIMING_MODELS = ("cram", "cram-forced-dense", "cram-static", "cram-no-consolidation",
                 "seqboat", "transformer")


def token_task(task: str) -> str | None:
    """``task`` when it names a built-in token task of ``cram tasks`` (SRCD excluded), else None."""
    from cram.tasks import list_tasks

    return task if task != "srcd" and task in list_tasks() else None


def task_overrides(task: str) -> list[str]:
    """The ``--set`` overrides of ``task`` (none for a token task: it is passed as ``--task``)."""
    if task in TASKS:
        return list(TASKS[task])
    if token_task(task):
        return []
    from cram.tasks import list_tasks

    names = [*TASKS, *(t for t in list_tasks() if t != "srcd")]
    raise ConfigError(f"--tasks {task!r}: choose from {', '.join(names)}")


def run_overrides(model: str, task: str, preset: str, overrides: list[str],
                  task_args=()) -> list[str]:
    """Task overrides, the user's ``--set`` and, for ``mod-matched``, the task's novel floor."""
    out = [*task_overrides(task), *overrides]
    if model == "mod-matched" and not any(o.startswith("model.mod_capacity") for o in out):
        out.append(f"model.mod_capacity={task_floor(task, preset, overrides, task_args):.6g}")
    return out


def task_floor(task: str, preset: str, overrides: list[str], task_args=()) -> float:
    """The novel-query floor of ``task``: counted on a token task, from the config on SRCD."""
    if token_task(task):
        return token_novel_floor(task, task_args)
    return novel_floor("cram", preset, [*task_overrides(task), *overrides])


def novel_floor(model: str, preset: str, overrides: list[str]) -> float:
    """Share of tokens that are novel queries: query rate × (1 − library share) of the data."""
    from cram.consolidation.config import resolve

    data = resolve(model, preset, overrides).data
    return data.n_queries / data.length * (1.0 - data.library_share)


def token_novel_floor(task: str, task_args=(), n: int = 256, seed: int = 0) -> float:
    """Share of tokens that are novel queries (scored, ``pattern`` < 0) in ``n`` sequences."""
    from cram.tasks import batch_stats, load_task

    return batch_stats(load_task(task, list(task_args)).sample(n, seed))["floor"]


# ---------------------------------------------------------------------- evaluation of one run
def novel_dip(run) -> dict:
    """Lowest novel-query attention after warm-up (metrics.csv) and its step."""
    m = run.metrics
    after = m[m["step"] >= run.warmup_steps]
    if not len(after):
        return {"novel_dip": float("nan"), "novel_dip_step": None}
    i = after["attention_novel"].idxmin()
    return {"novel_dip": float(after.loc[i, "attention_novel"]),
            "novel_dip_step": int(after.loc[i, "step"])}


def eval_batches(run_dir: Path, config, device: str):
    """Yield (batch, query mask, answers, library mask at the queries) of a run's evaluation set.

    The run's own task (``consolidation.api.run_task``) says what a query, its answer and its
    library binding are (``eval_view``). Same set as training's evaluation
    (``train.eval_sequences``, ``train.eval_seed``).
    """
    from cram.consolidation.api import run_task

    task = run_task(run_dir, config)
    data = task.eval_set(config.train.eval_sequences, config.train.eval_seed)
    for start in range(0, len(data), config.train.eval_batch_size):
        b = data.slice(start, start + config.train.eval_batch_size).to_torch(device)
        view = task.eval_view(b)
        query = view["query"]  # (B, T)
        yield b, query, view["answer"], view["is_library"][query].cpu().numpy()


def ablation_accuracies(run_dir: Path, device: str = "cpu") -> dict:
    """Library / novel accuracy of a trained run's weights under each of ``ABLATIONS``.

    Evaluated on the run's own evaluation set (SRCD or its token task), with the routing of the
    normal hard pass: attention per (token, layer) pair and per token; ``n_library_queries`` and
    ``n_tokens`` set the resolution of the reductions' lower bounds.
    """
    import torch

    from cram.consolidation.checkpoint import load_trained
    from cram.models import Route

    model, config, _ = load_trained(run_dir)
    model.eval()
    consolidates = getattr(model, "consolidates", False)
    hits = {name: [] for name, _ in ABLATIONS}
    lib, per_pair, per_token, n_tokens = [], [], [], 0
    with torch.no_grad():
        for b, query, answer, is_lib in eval_batches(run_dir, config, device):
            lib.append(is_lib)
            n_tokens += query.numel()
            for name, kw in ABLATIONS:
                if name == "semantic_zeroed" and not consolidates:
                    continue
                out = model(b, Route("hard", **kw))
                hits[name].append((out.value_logits.argmax(-1) == answer)[query].cpu().numpy())
                if name == "normal":
                    epi = torch.stack([s.episodic.float() > 0.5 for s in out.layers])  # (L, B, T)
                    per_pair.append(float(epi.float().mean()))
                    per_token.append(float(epi.any(0).float().mean()))
    is_lib = np.concatenate(lib).astype(bool)
    row = {"attention_per_pair": float(np.mean(per_pair)),
           "attention_per_token": float(np.mean(per_token)),
           "n_library_queries": int(is_lib.sum()), "n_tokens": n_tokens}
    for name, parts in hits.items():
        correct = np.concatenate(parts) if parts else np.array([])
        row[f"acc_library_{name}"] = float(correct[is_lib].mean()) if correct.size else math.nan
        row[f"acc_novel_{name}"] = float(correct[~is_lib].mean()) if correct.size else math.nan
    return row


def mechanism_row(model: str, task: str, seed: int, run_dir: Path) -> dict:
    """One table row: final routing of the run, its novel-attention dip and the ablations."""
    from cram.core.runs import load_run

    from .bench import attention_reduction

    run = load_run(run_dir)
    last = run.metrics.iloc[-1]
    ablations = ablation_accuracies(run_dir)
    loss_on, gated = GRID.get(model, (None, None))
    row = {"task": task, "model": model, "seed": seed, "consolidation_loss": loss_on,
           "cost_gated": gated,
           "attention_library_queries": float(last["attention_library"]),
           "attention_novel_queries": float(last["attention_novel"]),
           **novel_dip(run),
           **attention_reduction(run, n_library_queries=ablations.pop("n_library_queries"),
                                 n_tokens=ablations.pop("n_tokens")),
           **{k: float(last[k]) for k in ("q_library", "qhat_library", "qhat_novel")
              if k in last},
           "run": str(run_dir)}
    row.update(ablations)
    return row


def run_mechanism(models: list[str], tasks: list[str], preset: str, seeds: int, root: Path,
                  overrides: list[str], progress: bool = True, task_args=()) -> list[dict]:
    """Train (or reuse) every model × task × seed under ``root/<task>/`` and return the rows.

    ``srcd-id`` runs live in ``root`` itself, so ``cram`` / ``cram-no-consolidation`` runs made by
    ``cram train --out root/<model>-seed<k>`` (e.g. the reference demo runs) are reused.
    ``task_args`` (``key=value``) go to every token task's factory.
    """
    from .bench import ensure_run

    rows = []
    for task in tasks:
        folder = root if task == "srcd-id" else root / task
        for model in models:
            for seed in range(seeds):
                run_dir = folder / f"{model}-seed{seed}"
                ensure_run(model, preset, seed, run_dir,
                           run_overrides(model, task, preset, overrides, task_args),
                           progress=progress, task=token_task(task),
                           task_args=list(task_args) if token_task(task) else ())
                rows.append(mechanism_row(model, task, seed, run_dir))
    return rows


# ---------------------------------------------------------------------- summaries
MEAN_KEYS = ("acc_library_normal", "acc_novel_normal", "acc_library_semantic_zeroed",
             "acc_library_forced_working", "acc_library_forced_attention",
             "attention_library_queries", "attention_novel_queries", "novel_dip",
             "attention_per_pair", "attention_per_token")


def summarize_mechanism(rows: list[dict]) -> list[dict]:
    """Per task and model: mean and 95% t-interval of ``MEAN_KEYS``; the reduction's median.

    The library-query reduction is a lower-bound ratio where the end value is 0, so it gets a
    median, a range and the count of lower bounds, never a t-interval.
    """
    from .bench import mean_interval, ratio_summary

    out = []
    for key in dict.fromkeys((r["task"], r["model"]) for r in rows):
        mine = [r for r in rows if (r["task"], r["model"]) == key]
        s = {"task": key[0], "model": key[1], "seeds": len(mine)}
        for k in MEAN_KEYS:
            mean, low, high = mean_interval([r.get(k) for r in mine])
            s[k] = mean
            s[f"{k}_ci95"] = f"[{low:.3g}, {high:.3g}]" if np.isfinite(low) else ""
        s.update(ratio_summary(mine))
        out.append(s)
    return out


# ---------------------------------------------------------------------- timing
def _timed_model(name: str, runs: dict[str, Path]):
    """(model, Route, config) of a timing row; ``cram-forced-dense``: CRAM attending everywhere."""
    from cram.consolidation.checkpoint import load_trained
    from cram.models import HARD, Route

    source = "cram" if name == "cram-forced-dense" else name
    model, config, _ = load_trained(runs[source])
    model.eval()
    route = Route("hard", force="episodic") if name == "cram-forced-dense" else HARD
    return model, route, config


def timing_rows(runs: dict[str, Path], lengths=(2048, 8192), shares=(0.5, 0.9),
                n_sequences: int = 20, threads: int = 1, seed: int = 123,
                bootstrap_resamples: int = 2000, forced_dense: bool = True) -> list[dict]:
    """Interleaved hard-routed inference time (batch 1) per length and library share.

    The models are those in ``runs`` plus CRAM's own weights forced dense.

    Each of the ``n_sequences`` sequences is run once by every model in turn (after one untimed
    warm-up sequence per model), so load changes hit all models alike. Returns one row per
    (length, share, model): median ms, a 95% bootstrap interval of the median
    (``scipy.stats.bootstrap``, percentile), accuracy at that length, attention per pair, the
    torch thread count in use and the 1-minute load average before and after.
    """
    import dataclasses
    import time

    import torch
    from scipy import stats

    from cram.tasks.srcd_stream import EVENT_QUERY, SRCD

    from .timing import torch_threads

    names = [n for n in TIMING_MODELS if (n if n != "cram-forced-dense" else "cram") in runs
             and (n != "cram-forced-dense" or forced_dense)]
    loaded = {n: _timed_model(n, runs) for n in names}
    rows = []
    with torch_threads(threads), torch.inference_mode():
        for length in lengths:
            for share in shares:
                data_cfg = dataclasses.replace(loaded[names[0]][2].data, length=length,
                                               library_share=share)
                batch = SRCD(data_cfg).sample(n_sequences + 1, seed, library_labels=True)
                load_before = os.getloadavg()[0]
                times = {n: [] for n in names}
                correct = {n: [0, 0] for n in names}
                attn = {n: [] for n in names}
                for i in range(n_sequences + 1):
                    b = batch.slice(i, i + 1).to_torch()
                    query = b["event"] == EVENT_QUERY
                    for n in names:
                        model, route, _ = loaded[n]
                        t0 = time.perf_counter()
                        out = model(b, route)
                        elapsed = 1000 * (time.perf_counter() - t0)
                        if i == 0:
                            continue  # warm-up
                        times[n].append(elapsed)
                        hit = (out.value_logits.argmax(-1) == b["answer"])[query]
                        correct[n][0] += int(hit.sum())
                        correct[n][1] += int(query.sum())
                        attn[n].append(float(torch.stack(
                            [s.episodic.float() > 0.5 for s in out.layers]).float().mean()))
                load_after = os.getloadavg()[0]
                used_threads = torch.get_num_threads()
                for n in names:
                    x = np.asarray(times[n])
                    ci = stats.bootstrap((x,), np.median, confidence_level=0.95,
                                         n_resamples=bootstrap_resamples, method="percentile",
                                         random_state=np.random.default_rng(seed)).confidence_interval
                    rows.append({"length": length, "library_share": share, "model": n,
                                 "ms_median": float(np.median(x)),
                                 "ms_ci95": f"[{ci.low:.3g}, {ci.high:.3g}]",
                                 "sequences": int(x.size),
                                 "acc": correct[n][0] / max(correct[n][1], 1),
                                 "attention_per_pair": float(np.mean(attn[n])),
                                 "torch_threads": used_threads, "load_1min_before": load_before,
                                 "load_1min_after": load_after})
    base = {(r["length"], r["library_share"]): r["ms_median"] for r in rows
            if r["model"] == "cram-forced-dense"}
    for r in rows:
        ref = base.get((r["length"], r["library_share"]))
        r["vs_forced_dense"] = r["ms_median"] / ref if ref else math.nan
    return rows


def timing_runs(root: Path, preset: str, seed: int, overrides: list[str], progress: bool = True,
                models=TIMING_MODELS) -> dict[str, Path]:
    """The trained runs the timing table needs (``srcd-id`` task, one seed), trained if missing.

    ``models`` names rows of ``TIMING_MODELS``; ``cram-forced-dense`` needs the ``cram`` run.
    """
    from .bench import ensure_run

    unknown = sorted(set(models) - set(TIMING_MODELS))
    if unknown:
        raise ConfigError(f"--timing-models {','.join(unknown)}: choose from "
                          + ", ".join(TIMING_MODELS))
    wanted = {"cram" if m == "cram-forced-dense" else m for m in models}
    runs = {}
    for model in [m for m in TIMING_MODELS if m in wanted]:
        run_dir = root / f"{model}-seed{seed}"
        runs[model] = ensure_run(model, preset, seed, run_dir,
                                 run_overrides(model, "srcd-id", preset, overrides),
                                 progress=progress)
    return runs
