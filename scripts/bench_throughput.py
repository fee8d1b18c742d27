"""Training throughput (tokens per second) of CRAM and the Transformer through the public CLI.

For each preset and model, trains ``--steps`` steps with ``cram train`` into a temporary folder
(evaluation only half-way and at the end, patterns and checkpoints only at the end; none of it
counts in ``train_seconds``), and reads ``tokens_seen`` and ``train_seconds`` from the last row
of ``metrics.csv``. ``second_half_tokens_per_s`` is the rate over the second half of the steps
alone (rows logged at half and at the end), which leaves out start-up costs such as Triton
compilation and autotuning on a GPU. Prints one line per run and a JSON list; states the
machine, the load (``uptime``), the date and the command; and writes the rows as a result file
(``cram.core.results``) into ``--results DIR`` (default ``$CRAM_RESULTS_DIR``, else
``./results``; the project's is the repository's ``results/``) unless ``--no-results``. The
study is named by the presets and devices measured.

Usage::

    python scripts/bench_throughput.py --presets demo --steps 40
    python scripts/bench_throughput.py --presets demo,cpu,paper --steps 40 --models cram,transformer
    python scripts/bench_throughput.py --steps 40 --rounds 2 \
        --variant before=OTHER_CHECKOUT/.venv/bin/python \
        --variant "after=.venv/bin/python;train.prefetch=2"

``--variant LABEL=PYTHON[;OVERRIDE...]`` runs ``PYTHON -m cram`` (another checkout's
interpreter: the code *before* a change) with extra ``--set`` overrides; an override written
``ENV:NAME=VALUE`` sets an environment variable of that run instead (e.g.
``ENV:CRAM_SYNC_FREE=0``, the training step with its per-step read-backs). With several variants
and ``--rounds N`` the runs alternate (variant, then model, in each round), so load changes on a
shared machine fall on every variant alike.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path


def _machine() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
        model = next(x.split(":", 1)[1].strip() for x in info if x.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} logical CPUs"


def _uptime() -> str:
    try:
        res = subprocess.run(["uptime"], capture_output=True, text=True, check=False)
        return res.stdout.strip()
    except OSError:
        return f"load average {os.getloadavg()}"


def measure(model: str, preset: str, steps: int, seed: int = 0, python: str = sys.executable,
            overrides: tuple[str, ...] = ()) -> dict:
    """Train ``steps`` steps of ``model`` at ``preset`` and return its throughput row.

    The run folder is read with this checkout's ``load_run`` whatever code trained it (the folder
    format is the contract between versions).
    """
    from cram.core.runs import load_run

    with tempfile.TemporaryDirectory(prefix="cram-throughput-") as tmp:
        out = Path(tmp) / f"{model}-{preset}"
        env = {**os.environ, **dict(o[4:].split("=", 1) for o in overrides
                                    if o.startswith("ENV:"))}
        if os.sep in python:  # a path: absolute, since the run starts in ``tmp``
            python = os.path.abspath(python)
        cmd = [python, "-m", "cram", "train", "--model", model, "--preset", preset,
               "--out", str(out), "--seed", str(seed), "--quiet", "--steps", str(steps),
               "--set", f"train.log_every={max(1, steps // 2)}",
               "--set", f"train.pattern_every={steps}",
               "--set", f"train.checkpoint_every={steps}",
               *(x for o in overrides if not o.startswith("ENV:") for x in ("--set", o))]
        # run from the temporary folder: from a checkout, `-m cram` would import that checkout's
        # top-level package whatever interpreter runs it (a "before" variant would mix code)
        res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, cwd=tmp)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
        run = load_run(out)  # the one run-folder reader
        rows = run.metrics.to_dict("records")
        last = rows[-1]
        mid = max((r for r in rows if int(r["step"]) <= steps // 2), key=lambda r: int(r["step"]))
        meta = run.meta
    tokens, seconds = float(last["tokens_seen"]), float(last["train_seconds"])
    late_tokens = tokens - float(mid["tokens_seen"])
    late_seconds = seconds - float(mid["train_seconds"])
    return {"model": model, "preset": preset, "steps": int(last["step"]), "tokens_seen": tokens,
            "train_seconds": seconds, "tokens_per_s": tokens / seconds,
            "second_half_tokens_per_s": late_tokens / late_seconds if late_seconds > 0 else None,
            "device": meta.get("device"), "seed": seed,
            "env": {k: env[k] for k in env if f"ENV:{k}={env[k]}" in overrides}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="demo", help="comma-separated presets")
    p.add_argument("--models", default="cram,transformer", help="comma-separated models")
    p.add_argument("--steps", type=int, default=40, help="training steps per run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variant", action="append", default=[],
                   help="LABEL=PYTHON[;OVERRIDE...] (repeatable; default: this interpreter)")
    p.add_argument("--rounds", type=int, default=1, help="alternating rounds over the variants")
    p.add_argument("--results", default=None, metavar="DIR",
                   help="results folder (default $CRAM_RESULTS_DIR, else ./results)")
    p.add_argument("--no-results", action="store_true", help="write no result file")
    args = p.parse_args(argv)
    if not args.no_results:  # a folder that cannot take the result fails before any training
        from cram.core.errors import CramError
        from cram.core.results import check_results_dir, default_results_dir

        try:
            check_results_dir(args.results or default_results_dir())
        except CramError as err:
            p.error(str(err))
    variants = [_variant(v) for v in args.variant] or [("", sys.executable, ())]
    print(f"# {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}; {_machine()}")
    print(f"# before: {_uptime()}")
    print(f"# command: python scripts/bench_throughput.py {' '.join(argv or sys.argv[1:])}")
    rows = []
    for rnd, preset, model, (label, python, overrides) in (
            (r, p_, m, v) for r in range(args.rounds) for p_ in args.presets.split(",")
            for m in args.models.split(",") for v in variants):
        row = {"variant": label, "round": rnd, "load": os.getloadavg()[0],
               **measure(model.strip(), preset.strip(), args.steps, args.seed, python, overrides)}
        rows.append(row)
        print(f"{label:>8} r{rnd} {row['preset']:>8} {row['model']:>12}: "
              f"{row['tokens_per_s']:10.0f} tokens/s "
              f"(second half {row['second_half_tokens_per_s'] or float('nan'):.0f}) "
              f"({row['tokens_seen']:.0f} tokens in {row['train_seconds']:.1f} s, "
              f"{row['steps']} steps, {row['device']}, load {row['load']:.1f})", flush=True)
    print(f"# after: {_uptime()}")
    print(json.dumps(rows))
    if not args.no_results:
        _record(args, argv, rows, variants)
    return 0


def _record(args, argv: list[str] | None, rows: list[dict], variants: list) -> None:
    """Write the rows as a result file; the study is named by the presets and devices."""
    from cram.core.benchlog import record_benchmark
    from cram.core.results import study_id

    devices = ", ".join(sorted({str(r["device"]) for r in rows})) or "no device"
    title = f"Training throughput through `cram train` ({args.presets}; {devices})"
    labels = [label for label, _, _ in variants if label]
    notes = (f"{args.steps} steps per run, {args.rounds} round(s); tokens_per_s = tokens_seen / "
             "train_seconds of the last metrics.csv row (evaluation, patterns and checkpoints "
             "excluded); second_half_tokens_per_s over the second half of the steps alone "
             "(no start-up costs). load: the 1-minute load average before each run.")
    columns = ["variant", "round", "preset", "model", "steps", "tokens_per_s",
               "second_half_tokens_per_s", "train_seconds", "device", "load"]
    path = record_benchmark(study_id(title), title, rows, columns, notes,
                            argv=["python", "scripts/bench_throughput.py",
                                  *(sys.argv[1:] if argv is None else argv)],
                            results=args.results, seeds=[args.seed],
                            variant=("variants: " + ", ".join(labels)) if labels else None)
    print(f"# result file: {path}")


def _variant(text: str) -> tuple[str, str, tuple[str, ...]]:
    """``LABEL=PYTHON[;OVERRIDE...]`` → (label, python, overrides)."""
    label, sep, rest = text.partition("=")
    if not sep or not rest:
        raise SystemExit(f"--variant {text!r}: expected LABEL=PYTHON[;OVERRIDE...]")
    python, *overrides = rest.split(";")
    bad = [o for o in overrides if o.startswith("ENV:") and "=" not in o[4:]]
    if bad:
        raise SystemExit(f"--variant {text!r}: {bad[0]!r} must be ENV:NAME=VALUE")
    return label, python, tuple(o for o in overrides if o)


if __name__ == "__main__":
    sys.exit(main())
