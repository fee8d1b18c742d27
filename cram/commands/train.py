"""``cram train`` and ``cram eval``: train a model on SRCD into a run folder; re-evaluate a run."""

from __future__ import annotations

import argparse
import sys

from cram.commands._util import add_set_argument, emit_json, log


def register(sub) -> None:
    """Add ``train`` and ``eval`` to the CLI's subparsers."""
    p = sub.add_parser(
        "train", help="train a model on SRCD or a token task and write a run folder",
        description="Train MODEL at PRESET on an endless SRCD stream, evaluating with hard "
                    "routing every log_every steps, and write a crash-safe run folder "
                    "(docs/run_folder.md). One process writes a folder at a time (a lock). "
                    "Under torchrun it trains with DistributedDataParallel.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=None,
                   help="model name, e.g. cram or transformer (an unknown name lists all); "
                        "required except with --resume, which reads it from the run")
    p.add_argument("--preset", default="demo",
                   help="cpu-tiny, demo, cpu, paper, or the labelled SRCD with the defaults "
                        "before 2026-12-07: demo-labelled, cpu-labelled, paper-labelled")
    p.add_argument("--out", required=True,
                   help="run folder to create (or to continue with --resume)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None,
                   help="override train.steps; with --resume, extend (or shorten) the saved run "
                        "to this many steps and record it in config.json")
    p.add_argument("--resume", action="store_true",
                   help="continue a run from its newest checkpoint (last.pt, else prev.pt; from "
                        "step 0 if it has none) with its saved config")
    p.add_argument("--restart", action="store_true",
                   help="start over a run folder that has no checkpoint (e.g. killed early)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the final metrics row as JSON")
    add_task_arguments(p, trust=True)
    add_set_argument(p)
    p.set_defaults(func=_train)

    e = sub.add_parser(
        "eval", help="evaluate a trained run on other settings",
        description="Rebuild a run's model from its last checkpoint and evaluate it with hard "
                    "routing on a new evaluation set: another length, recurrence f or seed "
                    "(--set data.length=1024 --set data.library_share=0.5 "
                    "--set train.eval_seed=7). Writes the same metrics; never modifies the run "
                    "folder unless --out is given. Refuses a checkpoint that does not match the "
                    "run's config.json.")
    e.add_argument("run_dir")
    e.add_argument("--checkpoint", default="last.pt")
    e.add_argument("--json", action="store_true")
    e.add_argument("--out", default=None, help="also write the metrics as JSON to this new file")
    e.add_argument("--attention-budget", type=float, default=None, metavar="SHARE",
                   help="CRAM only: let at most this share of each evaluation batch's "
                        "tokens read attention in each layer, those the router ranks highest "
                        "(e.g. 0.0225)")
    e.add_argument("--routes-of", default=None, metavar="RUN_DIR",
                   help="CRAM only: route this run by another CRAM run's hard choices on the "
                        "same batches (the same tokens attend, only the weights differ)")
    add_task_arguments(e, evaluating=True, trust=True)
    add_set_argument(e)
    e.set_defaults(func=_eval)


def add_task_arguments(p, evaluating: bool = False, trust: bool = False) -> None:
    """``--task SPEC`` and ``--task-arg key=value`` (also used by ``cram bench srcd``).

    ``trust`` adds ``--trust-task`` (train's ``--resume`` and ``eval``: reuse a run's task).
    """
    p.add_argument("--task", default=None, metavar="SPEC",
                   help="train on a token task instead of SRCD: a built-in name (cram tasks), "
                        "FILE.py:FACTORY or MODULE:FACTORY (docs/tasks.md)"
                   if not evaluating else "evaluate on this token task instead of the one the "
                   "run recorded (same vocabulary)")
    p.add_argument("--task-arg", action="append", default=[], metavar="KEY=VALUE",
                   dest="task_args", help="argument of the task's factory (repeatable)")
    if not trust:
        return
    p.add_argument("--trust-task", action="store_true",
                   help="with --resume or eval: import the user task file (or module) the run "
                        "recorded, after checking its SHA-256, without naming it in --task "
                        "(a run folder never imports code otherwise)")


def _train(args) -> int:
    from cram.consolidation.api import train
    from cram.core.errors import ConfigError

    if args.task_args and args.task is None:
        raise ConfigError("--task-arg needs --task")
    if args.model is None and not args.resume:
        raise ConfigError("--model is required (except with --resume, which reads it)")
    if args.trust_task and not args.resume:
        raise ConfigError("--trust-task applies to --resume (and cram eval) only")
    if args.resume and args.overrides:
        log("cram train: --resume continues the saved config; --set overrides are ignored")
    run = train(args.model, out=args.out, task=args.task, task_args=args.task_args,
                preset=args.preset, seed=args.seed, overrides=args.overrides, steps=args.steps,
                resume=args.resume, restart=args.restart, progress=not args.quiet,
                argv=["cram", *sys.argv[1:]], trust_task=args.trust_task)
    import cram
    from cram.experiments.report import resume_hint

    loaded = cram.load_run(run)
    final = loaded.metrics.iloc[-1].to_dict()
    if args.json:
        emit_json({"run": str(run), **final})
    else:
        log(f"run written to {run}")
        keys = ("step", "retrieval_acc", "retrieval_acc_library", "retrieval_acc_novel",
                "attention_fraction", "attention_library", "attention_novel", "dynamics_mse")
        if "floor" in final:  # a token task: attention per token against the floor
            keys = (*keys[:-1], "attention_token", "floor")
        log("  ".join(f"{k}={final.get(k):.4g}" if isinstance(final.get(k), float)
                      else f"{k}={final.get(k)}" for k in keys))
    hint = resume_hint(loaded)  # a run that ended before its transition says so, on stderr
    if hint:
        log(f"cram train: {hint}")
    return 0


def _eval(args) -> int:
    import json
    from pathlib import Path

    from cram.consolidation.api import evaluate_run
    from cram.core.errors import RunFolderError
    from cram.core.jsonio import atomic_write_json

    if args.out and Path(args.out).exists():
        raise RunFolderError(f"{args.out}: exists; refusing to overwrite")
    doc = evaluate_run(args.run_dir, args.overrides, checkpoint=args.checkpoint, spec=args.task,
                       args=args.task_args, trust=args.trust_task,
                       attention_budget=args.attention_budget, routes_of=args.routes_of)
    if args.out:
        atomic_write_json(args.out, doc)
    if args.json:
        emit_json(doc)
    else:
        print(json.dumps({k: v for k, v in doc.items() if k != "data"}, indent=1))
    return 0
