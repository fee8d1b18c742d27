"""``cram train`` and ``cram eval``: train a model on SRCD into a run folder; re-evaluate a run."""

from __future__ import annotations

import argparse
import sys

from cram.commands._util import add_set_argument, emit_json, log


def register(sub) -> None:
    """Add the ``train`` subcommand to ``sub``."""
    p = sub.add_parser(
        "train", help="train a model on SRCD and write a run folder",
        description="Train MODEL at PRESET on an endless SRCD stream, evaluating with hard routing "
                    "every log_every steps, and write a crash-safe run folder "
                    "(docs/run_folder.md). Under torchrun it trains with DistributedDataParallel.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="model name (see 'cram train --list')")
    p.add_argument("--preset", default="demo", help="cpu-tiny, demo, cpu or paper")
    p.add_argument("--out", required=True,
                   help="run folder to create (or to continue with --resume)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="override train.steps")
    p.add_argument("--resume", action="store_true",
                   help="continue a killed run from its checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the final metrics row as JSON")
    add_set_argument(p)
    p.set_defaults(func=_train)

    e = sub.add_parser(
        "eval", help="evaluate a trained run on other settings",
        description="Rebuild a run's model from its last checkpoint and evaluate it with hard "
                    "routing on a new evaluation set: another length, recurrence f or seed "
                    "(--set data.length=1024 --set data.library_share=0.5 "
                    "--set train.eval_seed=7). Writes the same metrics; never modifies the run "
                    "folder unless --out is given.")
    e.add_argument("run_dir")
    e.add_argument("--checkpoint", default="last.pt")
    e.add_argument("--json", action="store_true")
    e.add_argument("--out", default=None, help="also write the metrics as JSON to this new file")
    add_set_argument(e)
    e.set_defaults(func=_eval)


def _train(args) -> int:
    from cram.consolidation.config import resolve
    from cram.consolidation.train import train

    overrides = list(args.overrides)
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    config = resolve(args.model, args.preset, overrides)
    if args.resume and args.overrides:
        log("cram train: --resume continues the saved config; --set overrides are ignored")
    run = train(args.model, config, args.out, seed=args.seed, preset=args.preset,
                resume=args.resume, argv=["cram", *sys.argv[1:]], progress=not args.quiet)
    import cram

    final = cram.load_run(run).metrics.iloc[-1].to_dict()
    if args.json:
        emit_json({"run": str(run), **final})
    else:
        log(f"run written to {run}")
        keys = ("step", "retrieval_acc", "retrieval_acc_library", "retrieval_acc_novel",
                "attention_fraction", "attention_library", "attention_novel", "dynamics_mse")
        log("  ".join(f"{k}={final.get(k):.4g}" if isinstance(final.get(k), float)
                      else f"{k}={final.get(k)}" for k in keys))
    return 0


def _eval(args) -> int:
    import dataclasses
    import json
    from pathlib import Path

    import torch

    from cram.consolidation.checkpoint import load_checkpoint, rebuild_model
    from cram.consolidation.config import ExperimentConfig, _alias
    from cram.consolidation.evaluate import evaluate
    from cram.consolidation.srcd import SRCD
    from cram.core.errors import RunFolderError
    from cram.core.jsonio import atomic_write_json
    from cram.core.overrides import apply_overrides

    run_dir = Path(args.run_dir)
    state = load_checkpoint(run_dir / "checkpoints" / args.checkpoint)
    config = ExperimentConfig.from_dict(state["experiment"])
    config = apply_overrides(config, [_alias(o) for o in args.overrides])
    model = rebuild_model(state)
    spec = model.spec
    if (config.data.n_keys, config.data.n_values, config.data.key_encoding) != (
            spec.n_keys, spec.n_values, spec.key_encoding):
        raise RunFolderError("the evaluation data's vocabulary differs from the model's "
                             "(n_library, n_novel_keys, n_values and key_encoding must stay)")
    torch.set_num_threads(config.train.threads)
    eval_set = SRCD(config.data).eval_set(config.train.eval_sequences, config.train.eval_seed)
    ev = evaluate(model, eval_set, config.train.eval_batch_size, torch.device("cpu"),
                  n_library=config.data.n_library)
    doc = {"run": str(run_dir), "step": int(state["step"]),
           "data": dataclasses.asdict(config.data), **ev.metrics}
    if args.out:
        if Path(args.out).exists():
            raise RunFolderError(f"{args.out}: exists; refusing to overwrite")
        atomic_write_json(args.out, doc)
    if args.json:
        emit_json(doc)
    else:
        print(json.dumps({k: v for k, v in doc.items() if k != "data"}, indent=1))
    return 0
