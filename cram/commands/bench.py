"""``cram bench``: experiments that print a table and record it as a result file.

Each table becomes one result file (:mod:`cram.core.results`: rows, command, machine, load,
commit, seeds, date) under ``--results DIR`` (default ``$CRAM_RESULTS_DIR``, else ``./results``
in the working directory, never inside the installed package), in the folder of its study. The
project's results are the repository's ``results/`` (run from its root; ``cram docs render``
then rewrites docs/benchmarks.md). With ``--json`` the rows go to stdout and no file is written
unless ``--results`` is given; ``--no-results`` never writes.

Sub-verbs: ``srcd`` (models × seeds on SRCD), ``transfer`` (frozen semantic memory and router on
unseen tasks), ``recurrence`` (attention against the library share f), ``schedule`` (is the
transition learned or scheduled: vary warm-up, temperature and cost schedules), ``kernels``
(routed attention and the CT scan against their dense / loop baselines, plus whole-model timings).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cram.commands._bench_common import (
    check_results_target,
    checked_task_name,
    common_arguments,
    model_list,
    model_overrides,
    model_set_argument,
    report,
    result_arguments,
    results_target,
    runs_dir,
)
from cram.commands._util import emit_json, log, non_negative_int


def register(sub) -> None:
    """Add the ``bench`` subcommand and its experiments to ``sub``."""
    p = sub.add_parser("bench", help="benchmarks and experiments (tables → result files)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bsub = p.add_subparsers(dest="bench", metavar="EXPERIMENT")
    bsub.required = True

    s = bsub.add_parser("srcd", help="CRAM, its ablations and the baselines on SRCD",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common_arguments(s, models_default="all")
    model_set_argument(s)
    s.add_argument("--infer-length", type=non_negative_int, default=2048,
                   help="sequence length for infer_ms_per_seq (batch 1, one thread); 0 skips it")
    from cram.commands.train import add_task_arguments

    add_task_arguments(s)
    s.add_argument("--ranks", default=None,
                   help="semantic-rank sweep: comma-separated ranks (e.g. 4,8,16,32); each rank's "
                        "runs go to <runs-dir>/rank<R> (default runs-dir runs/rank-sweep-<preset>)")
    s.set_defaults(func=_srcd)

    t = bsub.add_parser("transfer", help="frozen semantic memory + router on unseen tasks",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common_arguments(t, models_default="cram")
    t.add_argument("--finetune-steps", type=int, default=None,
                   help="task-head training steps on each new task (default: the preset's steps/2)")
    t.set_defaults(func=_transfer)

    r = bsub.add_parser("recurrence", help="attention fraction against the library share f",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common_arguments(r, models_default="cram,cram-static")
    r.add_argument("--shares", default="0,0.25,0.5,0.7,0.9")
    r.set_defaults(func=_recurrence)

    h = bsub.add_parser("schedule", help="is the transition learned or scheduled? (vary schedules)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common_arguments(h, models_default="cram")
    h.set_defaults(seeds=1)
    h.add_argument("--variants", default="all",
                   help="comma-separated variant names from cram.experiments.schedule, or 'all'")
    h.set_defaults(func=_schedule)

    from cram.commands import bench_mechanism  # issue 15: `cram bench mechanism`

    bench_mechanism.add_parser(bsub)
    from cram.commands import bench_forgetting  # issue 29: `cram bench forgetting`

    bench_forgetting.add_parser(bsub)
    from cram.commands import bench_sweep  # issue 32: `cram bench sweep`

    bench_sweep.add_parser(bsub)
    from cram.commands import bench_breakdown  # issue 32: `cram bench breakdown`

    bench_breakdown.add_parser(bsub)

    k = bsub.add_parser("kernels", help="routed attention and CT scan vs dense / loop baselines",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    k.add_argument("--threads", type=int, default=1)
    k.add_argument("--quick", action="store_true", help="fewer repeats and sizes (smoke test)")
    k.add_argument("--shapes", choices=("small", "realistic"), default="small",
                   help="routed-attention shapes: small (any device) or realistic (GPU-sized, "
                        "bf16, against flash attention, triton and flex paths; CUDA only)")
    k.add_argument("--model-runs", default=None,
                   help="folder with trained cram-seed*/transformer-seed* runs for model_infer / "
                        "model_step rows (default: runs/bench-srcd-cpu, then runs/bench-srcd-demo)")
    k.add_argument("--parts", default="routed,scan,model",
                   help="comma-separated: routed (routed attention), scan (CT scan), model "
                        "(model_infer / model_step from --model-runs)")
    k.add_argument("--stream", default=None, metavar="PATH",
                   help="also append each row to PATH as one JSON line as soon as it is measured "
                        "(a run stopped by a time limit keeps its rows)")
    result_arguments(k)
    k.set_defaults(func=_kernels)


def _srcd(args) -> int:
    check_results_target(args)
    from cram.consolidation.config import get_preset
    from cram.experiments.bench import ensure_run, srcd_row, summarize
    from cram.experiments.sweep import run_convergence

    get_preset(args.preset)
    models = model_list(args.models)
    if args.ranks:
        return _rank_sweep(args, models)
    if args.task is not None:
        return _task_bench(args, models)
    overrides = model_overrides(args, models)
    root = runs_dir(args, "srcd")
    t0 = time.perf_counter()
    rows = []
    for model in models:
        for seed in range(args.seeds):
            run_dir = root / f"{model}-seed{seed}"
            log(f"[bench srcd] {model} seed {seed} → {run_dir}")
            ensure_run(model, args.preset, seed, run_dir, overrides[model],
                       progress=not args.quiet)
            rows.append({**srcd_row(model, seed, run_dir, args.infer_length or None),
                         **run_convergence(run_dir)})
    elapsed = time.perf_counter() - t0
    cols = ["model", "seed", "retrieval_acc", "retrieval_acc_library", "retrieval_acc_novel",
            "attention_fraction", "attention_per_token", "attention_library_queries",
            "attention_novel_queries", "attention_computed", "dynamics_mse", "reduction",
            "reduction_is_lower_bound", "reduction_all_tokens",
            "transition_step", "familiarity_rise_step", "lag_after_familiarity",
            "steps_to_converge", "converged", "train_seconds", "infer_ms_per_seq", "infer_acc"]
    summary = summarize(rows) if args.seeds > 1 else None
    scols = None
    if summary:
        scols = ["model", "seeds"] + [c for k in ("retrieval_acc_library", "retrieval_acc_novel",
                                                  "attention_fraction", "attention_per_token",
                                                  "attention_library_queries", "dynamics_mse",
                                                  "infer_ms_per_seq")
                                      for c in (k, f"{k}_ci95")] + [
            "reduction_median", "reduction_range", "reduction_lower_bounds"]
    notes = (f"Preset `{args.preset}`, runs in `{root}`. This invocation took {elapsed:.0f} s "
             "(finished runs are reused, so this is not a training time; see train_seconds). "
             "`reduction` = library-query attention at its peak after warm-up / at the end "
             "(a lower bound when the end value is below one query; over seeds: median and "
             "range, never a t-interval). attention_fraction is per (token, layer) pair, "
             "attention_per_token per token (any layer attends; the paper's unit). "
             "steps_to_converge = first evaluated step within 0.01 of the run's best novel "
             "accuracy; converged = its last quarter of evaluations no longer improved on the "
             "best before it by more than 0.01 (docs/baselines.md). "
             f"infer_ms_per_seq: hard-routed, batch 1, one thread, N={args.infer_length}.")
    report(f"SRCD: models × seeds (preset {args.preset})", rows, cols, args, notes, summary, scols)
    return 0


def _task_bench(args, models: list[str]) -> int:
    """``cram bench srcd --task SPEC``: the same models × seeds on a token task (no SRCD timing)."""
    from pathlib import Path

    from cram.consolidation.config import model_refusal
    from cram.core.errors import ConfigError
    from cram.experiments.bench import TOKEN_ROW_KEYS, ensure_run, srcd_row, summarize
    from cram.experiments.sweep import run_convergence

    if args.models == "all":
        models = [m for m in models if not model_refusal(m, "tokens")]
    for model in models:
        reason = model_refusal(model, "tokens")
        if reason:
            raise ConfigError(f"--model {model}: not available on token tasks: {reason}")
    name = checked_task_name(args)
    root = Path(args.runs_dir or f"runs/bench-task-{name}-{args.preset}")
    overrides = model_overrides(args, models)
    t0, rows = time.perf_counter(), []
    for model in models:
        for seed in range(args.seeds):
            run_dir = root / f"{model}-seed{seed}"
            log(f"[bench srcd --task {args.task}] {model} seed {seed} → {run_dir}")
            ensure_run(model, args.preset, seed, run_dir, overrides[model],
                       progress=not args.quiet, task=args.task, task_args=args.task_args)
            rows.append({**srcd_row(model, seed, run_dir, None), **run_convergence(run_dir)})
    keys = ("retrieval_acc_library", "retrieval_acc_novel", "attention_library_queries",
            "attention_novel_queries", "attention_fraction", *TOKEN_ROW_KEYS, "steps_to_converge")
    cols = ["model", "seed", *keys, "converged", "warmup_end", "warmup_ended_by",
            "train_seconds"]
    summary = summarize(rows, keys) if args.seeds > 1 else None
    scols = ["model", "seeds", *(c for k in keys for c in (k, f"{k}_ci95"))] if summary else None
    args_text = " ".join(f"--task-arg {a}" for a in args.task_args)
    notes = (f"Task `{args.task}` {args_text}, preset `{args.preset}`, runs in `{root}`; "
             f"{time.perf_counter() - t0:.0f} s. attention_fraction = per (token, layer) pair; "
             "attention_token = tokens that attend in any layer; floor = novel queries per token; "
             "steps_to_converge = first evaluated step within 0.01 of the run's best novel "
             "accuracy; converged = its last quarter of evaluations no longer improved "
             "(docs/baselines.md); warmup_end / warmup_ended_by = where the routing schedule "
             "ended warm-up and which rule ended it (criterion, plateau, max_wait; empty for "
             "models that do not route).")
    report(f"Token task {args.task}: models × seeds (preset {args.preset})", rows, cols, args,
            notes, summary, scols)
    return 0


def _rank_sweep(args, models: list[str]) -> int:
    """``cram bench srcd --ranks 4,8,16,32``: the same models and seeds at each semantic rank."""
    from pathlib import Path

    from cram.core.errors import ConfigError
    from cram.experiments.bench import ensure_run, srcd_row

    overrides = model_overrides(args, models)
    try:
        ranks = [int(r) for r in args.ranks.split(",") if r.strip()]
    except ValueError:
        raise ConfigError(f"--ranks {args.ranks!r}: comma-separated integers, "
                          "e.g. 4,8,16,32") from None
    root = Path(args.runs_dir or f"runs/rank-sweep-{args.preset}")
    rows = []
    for rank in ranks:
        for model in models:
            for seed in range(args.seeds):
                run_dir = root / f"rank{rank}" / f"{model}-seed{seed}"
                log(f"[bench srcd] rank {rank}: {model} seed {seed} → {run_dir}")
                ensure_run(model, args.preset, seed, run_dir,
                           [*overrides[model], f"model.semantic_rank={rank}"],
                           progress=not args.quiet)
                rows.append({"semantic_rank": rank, **srcd_row(model, seed, run_dir, None)})
    cols = ["semantic_rank", "model", "seed", "retrieval_acc_library", "retrieval_acc_novel",
            "attention_library_queries", "attention_novel_queries", "attention_fraction",
            "q_library", "q_novel", "qhat_library", "qhat_novel", "acc_library_semantic_only",
            "familiarity_rise_step", "transition_step"]
    report(f"Semantic-rank sweep (preset {args.preset})", rows, cols, args,
            f"Runs in `{root}/rank<R>`. q: agreement of the semantic and episodic value readouts "
            "on library / novel queries at the end; acc_library_semantic_only: library accuracy "
            "with every CRAM layer forced to semantic memory.")
    return 0


def _transfer(args) -> int:
    check_results_target(args)
    from cram.experiments.transfer import run_transfer

    rows = run_transfer(model_list(args.models), args.preset, args.seeds,
                        runs_dir(args, "transfer"), args.overrides, args.finetune_steps,
                        progress=not args.quiet)
    cols = ["model", "seed", "task", "library", "finetune_steps", "attention_library_frozen",
            "attention_library_scratch", "attention_query_frozen", "attention_query_scratch",
            "attention_reduction_pct", "retrieval_acc_frozen", "retrieval_acc_scratch"]
    report(f"Transfer to unseen tasks (preset {args.preset})", rows, cols, args,
            "attention_reduction_pct = 100·(1 − query attention with frozen semantic memory and "
            "router / query attention of a model trained from scratch on the same task and steps).")
    return 0


def _recurrence(args) -> int:
    check_results_target(args)
    from cram.experiments.recurrence import run_recurrence

    shares = [float(s) for s in args.shares.split(",")]
    rows = run_recurrence(model_list(args.models), args.preset, args.seeds, shares,
                          runs_dir(args, "recurrence"), args.overrides, progress=not args.quiet)
    cols = ["model", "seed", "library_share", "attention_query", "attention_library",
            "attention_fraction", "retrieval_acc", "retrieval_acc_novel", "static_floor"]
    report(f"Recurrence sweep (preset {args.preset})", rows, cols, args,
            "static_floor = the query share a static router needs to keep accuracy "
            "(every query attends); CRAM can go below it only on recurring (library) queries.")
    return 0


def _schedule(args) -> int:
    check_results_target(args)
    from cram.core.errors import ConfigError
    from cram.experiments.schedule import SCHEDULE_VARIANTS, run_schedule

    variants = list(SCHEDULE_VARIANTS) if args.variants == "all" else \
        [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in SCHEDULE_VARIANTS]
    if unknown:
        raise ConfigError(f"unknown schedule variant(s) {unknown}; choose from: "
                          + ", ".join(SCHEDULE_VARIANTS))
    rows = run_schedule(model_list(args.models), args.preset, args.seeds, variants,
                        runs_dir(args, "schedule"), args.overrides, progress=not args.quiet)
    cols = ["model", "variant", "seed", "settings", "warmup_end", "schedule_end",
            "familiarity_rise_step", "transition_step", "lag_after_familiarity", "after_schedule",
            "attention_library_queries", "attention_novel_queries", "retrieval_acc_novel"]
    changed = f"; {' '.join(args.overrides)}" if args.overrides else ""
    report(f"Learned or scheduled transition (preset {args.preset}{changed})", rows, cols, args,
            "familiarity_rise_step: change point of q̂(library) − q̂(novel); transition_step: change "
            "point of library-query attention after warm-up; lag_after_familiarity = their "
            "difference; after_schedule = transition step − (warm-up + cost ramp).")
    return 0


def _kernels(args) -> int:
    from cram.experiments.bench import model_timing_rows
    from cram.kernels.bench import run_kernel_bench, write_kernel_bench_tables

    check_results_target(args)
    parts = tuple(x.strip() for x in args.parts.split(",") if x.strip())
    unknown = sorted(set(parts) - {"routed", "scan", "model"})
    if unknown or not parts:
        from cram.core.errors import ConfigError

        raise ConfigError(f"--parts {args.parts!r}: choose among routed, scan, model")
    target = results_target(args)
    on_row = _row_streamer(args.stream)
    rows = run_kernel_bench(threads=args.threads, quick=args.quick, shapes=args.shapes,
                            parts=tuple(p for p in parts if p != "model"), on_row=on_row)
    if "model" in parts:
        model_rows = model_timing_rows(args.model_runs, threads=args.threads, quick=args.quick)
        for row in model_rows:
            on_row(row)
        rows += model_rows
    if target is not None:
        for path in write_kernel_bench_tables(rows, results=target):
            log(f"result file: {path}")
    if args.json:
        emit_json(rows)
    else:
        from cram.core.benchlog import markdown_table

        print(markdown_table(rows), file=sys.stderr)
    return 0


def _row_streamer(path: str | None):
    """``on_row`` for ``--stream PATH``: append each row as one JSON line (no-op without PATH)."""
    if path is None:
        return lambda row: None
    from cram.core.jsonio import json_safe

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)

    def write(row: dict) -> None:
        with target.open("a") as fh:
            fh.write(json.dumps(json_safe(row)) + "\n")

    return write
