"""``cram bench mechanism``: is consolidation the cause of CRAM's attention drop? Issue 15.

Trains (or reuses) the 2×2 of consolidation loss on/off × cost gated/ungated and the cost-matched
SeqBoat and MoD on each task, evaluates every trained model with the semantic output zeroed, with
every layer forced to working memory and with attention forced everywhere, and writes one table per
task plus a summary over seeds. ``--timing`` adds the interleaved inference-time table with CRAM's
own weights forced dense as the reference. Design: docs/cram.md, "Is consolidation the cause?".
"""

from __future__ import annotations

import argparse
import os

from cram.commands._bench_common import (
    check_results_target,
    common_arguments,
    model_list,
    report,
    runs_dir,
)
from cram.commands._util import emit_json, log, positive_int

ROW_COLUMNS = ["model", "seed", "consolidation_loss", "cost_gated", "acc_library_normal",
               "acc_novel_normal", "acc_library_semantic_zeroed", "acc_library_forced_working",
               "acc_library_forced_attention", "attention_library_queries",
               "attention_novel_queries", "novel_dip", "novel_dip_step", "attention_per_pair",
               "attention_per_token", "reduction", "reduction_is_lower_bound", "qhat_library",
               "qhat_novel"]
SUMMARY_COLUMNS = ["model", "seeds"] + [c for k in (
    "acc_library_normal", "acc_novel_normal", "acc_library_semantic_zeroed",
    "acc_library_forced_working", "acc_library_forced_attention", "attention_library_queries",
    "novel_dip", "attention_per_pair", "attention_per_token") for c in (k, f"{k}_ci95")] + [
    "reduction_median", "reduction_range", "reduction_lower_bounds"]
TIMING_COLUMNS = ["length", "library_share", "model", "ms_median", "ms_ci95", "vs_forced_dense",
                  "sequences", "acc", "attention_per_pair", "torch_threads", "load_1min_before",
                  "load_1min_after"]


def add_parser(bsub) -> None:
    """Register ``mechanism`` under ``cram bench`` (with the bench verbs' shared options)."""
    from cram.experiments.mechanism import MECHANISM_MODELS, TIMING_MODELS

    m = bsub.add_parser("mechanism", help="is consolidation the cause? 2×2, matched baselines, "
                        "ablations", description=__doc__,
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common_arguments(m, models_default=",".join(MECHANISM_MODELS))
    m.set_defaults(seeds=5, func=run)
    m.add_argument("--tasks", default="srcd-id,srcd-vector",
                   help="comma-separated: srcd-id, srcd-vector, srcd-permuted, srcd-unlabelled "
                        "(the last two close the readout shortcut; docs/srcd.md), or a built-in "
                        "token task of `cram tasks` (recall-unmarked, recall-marked, phrases)")
    m.add_argument("--task-arg", dest="task_args", action="append", default=[],
                   metavar="KEY=VALUE", help="argument of every token task's factory (repeat)")
    m.add_argument("--timing", action="store_true",
                   help="also time cram, cram forced dense, cram-static, cram-no-consolidation, "
                        "seqboat and the transformer (srcd-id, seed 0), interleaved")
    m.add_argument("--timing-lengths", default="2048,8192")
    m.add_argument("--timing-shares", default="0.5,0.9",
                   help="library share of the timed sequences (the models are not retrained)")
    m.add_argument("--timing-sequences", type=positive_int, default=20)
    m.add_argument("--timing-models", default=",".join(TIMING_MODELS),
                   help="rows of the timing table (missing srcd-id seed-0 runs are trained)")
    m.add_argument("--threads", type=positive_int, default=1, help="torch threads for timing")


def _floats(text: str, what: str, kind=float) -> list:
    from cram.core.errors import ConfigError

    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{what} {text!r}: comma-separated numbers") from None


def run(args) -> int:
    """The ``cram bench mechanism`` verb."""
    from cram.consolidation.config import get_preset
    from cram.core.errors import ConfigError
    from cram.experiments.mechanism import (
        TIMING_MODELS,
        run_mechanism,
        summarize_mechanism,
        task_floor,
        task_overrides,
        timing_rows,
        timing_runs,
        token_task,
    )
    from cram.tasks import load_task

    check_results_target(args)
    get_preset(args.preset)
    models = model_list(args.models)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    for task in tasks:
        task_overrides(task)  # unknown task: fails before any training
        if token_task(task):
            load_task(task, args.task_args)  # bad --task-arg: fails before any training
    if args.task_args and not any(token_task(t) for t in tasks):
        raise ConfigError("--task-arg needs a token task in --tasks")
    wanted = [m.strip() for m in args.timing_models.split(",") if m.strip()]
    if args.timing and sorted(set(wanted) - set(TIMING_MODELS)):
        raise ConfigError(f"--timing-models {args.timing_models!r}: choose from "
                          + ", ".join(TIMING_MODELS))
    root = runs_dir(args, "mechanism")
    table_args = argparse.Namespace(**{**vars(args), "json": False,  # one JSON document at the end
                                       "no_docs": args.no_docs or (args.json and not args.doc)})
    rows = run_mechanism(models, tasks, args.preset, args.seeds, root, args.overrides,
                         progress=not args.quiet, task_args=args.task_args)
    summary = summarize_mechanism(rows)
    for task in tasks:
        mine = [r for r in rows if r["task"] == task]
        floor = task_floor(task, args.preset, args.overrides, args.task_args)
        given = (" Task arguments: " + " ".join(args.task_args) + "."
                 if token_task(task) and args.task_args else "")
        notes = (f"Task `{task}`, preset `{args.preset}`, runs in `{root}`.{given} "
                 "acc_library_*: library "
                 "accuracy of the same weights with hard routing (normal), the semantic output "
                 "zeroed, every layer forced to working memory, and attention forced everywhere. "
                 "novel_dip: lowest novel-query attention after warm-up (metrics.csv). "
                 "attention_per_pair: share of (token, layer) pairs reading episodic memory; "
                 "per_token: tokens for which any layer does. Summary: mean and 95% t-interval "
                 "over seeds; reduction (peak / end library-query attention) as median and range, "
                 f"with the count of lower bounds. mod-matched capacity = novel floor {floor:.4f}. "
                 "Load average (1, 5, 15 min) when the table was written: "
                 + ", ".join(f"{x:.2f}" for x in os.getloadavg()) + ".")
        report(f"Mechanism: is consolidation the cause? ({task}, preset {args.preset})", mine,
                ROW_COLUMNS, table_args, notes, [s for s in summary if s["task"] == task],
                SUMMARY_COLUMNS)
    trows = []
    if args.timing:
        runs = timing_runs(root, args.preset, 0, args.overrides, progress=not args.quiet,
                           models=wanted)
        trows = timing_rows(runs, _floats(args.timing_lengths, "--timing-lengths", int),
                            _floats(args.timing_shares, "--timing-shares"),
                            args.timing_sequences, args.threads,
                            forced_dense="cram-forced-dense" in wanted)
        log("[bench mechanism] timing done")
        report(f"Mechanism timing: CRAM against its own weights forced dense (preset "
                f"{args.preset})", trows, TIMING_COLUMNS, table_args,
                "Hard-routed inference, batch 1, interleaved (each sequence runs through every "
                "model in turn after one untimed warm-up sequence); ms_median with a 95% "
                "percentile bootstrap interval of the median (scipy.stats.bootstrap); "
                "vs_forced_dense = ms / ms of the same CRAM weights with attention forced at "
                "every token. torch_threads: torch.get_num_threads() during timing; load: "
                "os.getloadavg() 1-minute, before and after each (length, share) block.")
    if args.json:
        emit_json({"rows": rows, "summary": summary, "timing": trows})
    return 0
