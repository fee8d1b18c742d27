"""`cram redundancy`: how predictable GPT-2's attention output is from its residual stream.

Imports nothing heavy at module import; torch and the analysis load inside the handler.
"""

from __future__ import annotations

import argparse
import datetime as _dt
from pathlib import Path

from cram.commands._util import add_set_argument, emit_json, log, non_negative_int
from cram.core.overrides import apply_overrides

DESCRIPTION = """\
Fit ridge probes from the pre-attention residual h (the residual stream entering each block,
BEFORE ln_1) to the attention output a (AFTER the output projection c_proj, bias included: what is
added to the residual) per layer, and per head to the head output BEFORE c_proj. Evaluate on
held-out tokens: R² and the fraction of (token, layer) attention operations with cos(a, â) >= tau
(default 0.9; a sensitivity table over tau and over relative error is written too). Every number is
reported with all tokens and without the first token (the attention sink). A causal check replaces
the outputs called redundant by the probe's prediction and measures the change in next-token loss.

Either probe a local Hugging Face GPT-2 directory (--model-dir: config.json plus model.safetensors
or pytorch_model.bin, read with weights_only; vocab.json and merges.txt to tokenize text; nothing is
downloaded), or train a small byte-level GPT-2 on the shipped public-domain Shakespeare corpus and
probe each checkpoint (--train-small). Writes probe.csv, sensitivity.csv, causal.csv,
summary.json and redundancy.png to --out."""


def register(sub) -> None:
    """Add ``cram redundancy`` to the CLI's subparsers."""
    p = sub.add_parser(
        "redundancy",
        help="probe GPT-2 attention redundancy (ridge probe, over training, causal check)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-dir", metavar="DIR",
                     help="local Hugging Face GPT-2 directory (config.json + weights)")
    src.add_argument("--train-small", action="store_true",
                     help="train a small byte-level GPT-2 on the shipped corpus and probe its "
                          "checkpoints")
    p.add_argument("--preset", default="cpu-tiny", choices=["cpu-tiny", "cpu"],
                   help="--train-small size: cpu-tiny (under a minute) or cpu (minutes)")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (must not exist or be empty); default "
                        "runs/redundancy-<preset|model>-<UTC time>")
    p.add_argument("--text", metavar="FILE",
                   help="--model-dir only: UTF-8 text to probe on (first half fits, second half "
                        "evaluates); default: the shipped corpus's held-out split")
    p.add_argument("--threshold", type=float, default=None,
                   help="cosine threshold tau for 'predictable' (default 0.9)")
    p.add_argument("--seed", type=non_negative_int, default=None,
                   help="seed (training and window choice)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: fastest on shared 2-core machines)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document: probe rows {checkpoint, layer, head, r2, "
                        "predictable_fraction, ...}, causal rows, summary")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    add_set_argument(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    import dataclasses

    import torch

    from cram import redundancy as R
    from cram.core.errors import ConfigError

    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    progress = not args.no_progress
    if args.train_small:
        if args.text:
            raise ConfigError("--text applies to --model-dir only")
        cfg = apply_overrides(R.train_preset(args.preset), args.overrides)
        probe_kw = {}
        if args.threshold is not None:
            probe_kw["cos_threshold"] = args.threshold
        if args.seed is not None:
            cfg = dataclasses.replace(cfg, seed=args.seed)
            probe_kw["seed"] = args.seed
        if probe_kw:
            cfg = dataclasses.replace(cfg, probe=dataclasses.replace(cfg.probe, **probe_kw))
        out = Path(args.out or f"runs/redundancy-{args.preset}-{stamp}")
        log(f"cram redundancy: training GPT-2 preset {cfg.model!r} for {cfg.steps} steps; "
            f"checkpoints at {list(cfg.checkpoint_steps)}; output {out}")
        res = R.run_train_small(cfg, out, progress=progress)
    else:
        cfg = apply_overrides(R.ProbeConfig(), args.overrides)
        if args.threshold is not None:
            cfg = dataclasses.replace(cfg, cos_threshold=args.threshold)
        if args.seed is not None:
            cfg = dataclasses.replace(cfg, seed=args.seed)
        out = Path(args.out or f"runs/redundancy-{Path(args.model_dir).name}-{stamp}")
        log(f"cram redundancy: probing {args.model_dir}; output {out}")
        res = R.run_model_dir(args.model_dir, cfg, out, args.text, progress=progress)
    if args.json:
        emit_json({"probe": res["probe"], "causal": res["causal"], "summary": res["summary"]})
    else:
        _print_table(res)
    log(f"wrote {out}/probe.csv, sensitivity.csv, causal.csv, summary.json, redundancy.png")
    return 0


def _print_table(res) -> None:
    """Human-readable summary on stdout: per checkpoint, layer-level R² and fractions."""
    print("h = residual before ln_1; a = attention output after c_proj; "
          "predictable: cos(a, a_hat) >= tau; baseline: cos(a, mean a) >= tau")
    print(f"{'checkpoint':<14}{'tokens':<16}{'layer':>6}{'R2':>9}{'pred.frac':>11}"
          f"{'baseline':>10}{'dLoss(red.)':>13}{'dLoss(rand)':>13}{'replaced':>10}")
    causal = {(c["checkpoint"], c["tokens"], str(c["layer"])): c for c in res["causal"]}
    for r in res["probe"]:
        if r["head"] is not None:
            continue
        c = causal.get((r["checkpoint"], r["tokens"], str(r["layer"])), {})
        print(f"{r['checkpoint']:<14}{r['tokens']:<16}{r['layer']:>6}{r['r2']:>9.3f}"
              f"{r['predictable_fraction']:>11.3f}{r['baseline_fraction']:>10.3f}"
              f"{c.get('delta_loss_redundant', float('nan')):>13.4f}"
              f"{c.get('delta_loss_random', float('nan')):>13.4f}"
              f"{c.get('replaced_fraction', float('nan')):>10.3f}")
    for c in res["causal"]:
        if c["layer"] == "all":
            print(f"{c['checkpoint']:<14}{c['tokens']:<16}{'all':>6}{'':>9}{'':>11}{'':>10}"
                  f"{c['delta_loss_redundant']:>13.4f}{c['delta_loss_random']:>13.4f}"
                  f"{c['replaced_fraction']:>10.3f}")
    print(f"figure: {res['summary']['figure']}")
