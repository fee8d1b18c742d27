"""Benchmark PyMC's default NUTS against nutpie on the hierarchical γ fit (run outside CI).

The fit: every shipped human curve that is not derived (Ebbinghaus; Rubin, Hinton & Wenzel's
three conditions) plus 5 model curves (``--run`` folders, or synthetic fixture runs when none
are given), power form, offsets ``steps=10`` and ``intervening_items=1``, 2 chains x 1000 draws.
Each (sampler, cache) cell runs in a fresh process: ``cold`` with an empty PyTensor compile
cache, ``warm`` with the cache the cold run left. Wall time covers the whole fit call
(compile + sample + predictive checks + log-likelihood), not the Python start-up.

Usage::

    python scripts/bench_samplers.py [--run DIR ...] [--repeats 1] [--target-accept 0.9,0.99]
                                     [--results DIR | --no-results]

The table is written as a result file (``cram.core.results``) into ``--results DIR`` (default
``$CRAM_RESULTS_DIR``, else ``./results``; the project's is the repository's ``results/``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worker(args) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    import pandas as pd

    from cram.fitting.bayes import fit_bayes
    from cram.fitting.model_curves import model_curves
    from cram.fitting.rules import ComparisonRules
    from cram.psych_data import load_all_human

    runs = args.run
    if not runs:
        from cram.testing import write_synthetic_run

        tmp = tempfile.mkdtemp()
        runs = [write_synthetic_run(Path(tmp) / f"cram-seed{s}", seed=s) for s in range(5)]
    df = pd.concat([load_all_human(include_derived=False), model_curves(runs)], ignore_index=True)
    rules = ComparisonRules(form="power", offset={"steps": 10.0, "intervening_items": 1.0})
    t0 = time.perf_counter()
    res = fit_bayes(df, rules, sampler=args.sampler, seed=args.seed, progress=False,
                    draws=1000, tune=1000, chains=2, target_accept=args.target_accept_one)
    wall = time.perf_counter() - t0
    d = res.diagnostics
    print(json.dumps({"wall_s": wall, "sample_s": res.timings["sample_s"],
                      "r_hat_max": d["r_hat_max"], "ess_bulk_min": d["ess_bulk_min"],
                      "divergences": d["divergences"], "curves": int(df["curve"].nunique()),
                      "points": int(len(res.curves)),
                      "delta_gamma": res.delta_gamma["mean"] if res.delta_gamma else None}))


def _cells(spec: str | None) -> list[tuple[str, float]]:
    """(sampler, target acceptance) pairs to time: each sampler at each acceptance."""
    from cram.fitting.bayes import TARGET_ACCEPT

    values = ([float(x) for x in spec.split(",") if x.strip()] if spec
              else [TARGET_ACCEPT["hierarchical"]])
    if not values or not all(0 < v < 1 for v in values):
        raise SystemExit(f"bench_samplers: --target-accept {spec!r}: values must be in (0, 1)")
    return [(s, v) for s in ("pymc", "nutpie") for v in values]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="append", default=[], help="model run folder (repeatable)")
    ap.add_argument("--sampler", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--target-accept-one", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--target-accept", default=None, metavar="P1,P2",
                    help="NUTS target acceptances to time, comma-separated (default: the "
                         "hierarchical fit's, cram.fitting.bayes.TARGET_ACCEPT)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1, help="warm repeats per sampler")
    ap.add_argument("--no-results", "--no-bench", dest="no_results", action="store_true",
                    help="write no result file")
    ap.add_argument("--results", default=None, metavar="DIR",
                    help="results folder (default $CRAM_RESULTS_DIR, else ./results; the "
                         "project's: results/ at the repository root)")
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if not args.no_results:  # a folder that cannot take the result fails before any fit
        from cram.core.errors import CramError
        from cram.core.results import check_results_dir, default_results_dir

        try:
            check_results_dir(args.results or default_results_dir())
        except CramError as err:
            ap.error(str(err))
    rows = []
    for sampler, target_accept in _cells(args.target_accept):
        cache = tempfile.mkdtemp(prefix=f"pytensor-{sampler}-")
        env = {**os.environ, "PYTENSOR_FLAGS": f"base_compiledir={cache}"}
        for cell in ["cold", *["warm"] * args.repeats]:
            cmd = [sys.executable, __file__, "--worker", "--sampler", sampler,
                   "--seed", str(args.seed), "--target-accept-one", str(target_accept)]
            cmd += [x for r in args.run for x in ("--run", r)]
            print(f"bench: {sampler} {target_accept} {cell} ...", file=sys.stderr, flush=True)
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
            if out.returncode != 0:
                print(out.stderr[-3000:], file=sys.stderr)
                return 1
            r = json.loads(out.stdout.strip().splitlines()[-1])
            r["ess_per_s"] = r["ess_bulk_min"] / r["wall_s"]
            r["s_to_ess_400"] = r["wall_s"] * max(1.0, 400 / max(r["ess_bulk_min"], 1.0))
            rows.append({"sampler": "pymc NUTS" if sampler == "pymc" else "nutpie",
                         "target_accept": target_accept, "cache": cell, **r})
            print(f"bench: {rows[-1]}", file=sys.stderr, flush=True)
    cols = ["sampler", "target_accept", "cache", "wall_s", "sample_s", "r_hat_max",
            "ess_bulk_min", "ess_per_s", "s_to_ess_400", "divergences", "curves", "points"]
    warm = [r for r in rows if r["cache"] == "warm"]
    fastest = min(warm, key=lambda r: r["wall_s"])
    best = min(warm, key=lambda r: r["s_to_ess_400"])
    notes = (f"Hierarchical power fit, {rows[0]['curves']} curves / {rows[0]['points']} points "
             f"(human: Ebbinghaus + 3 Rubin et al. conditions; model: "
             f"{'given runs' if args.run else '5 synthetic fixture runs'}), 2 chains x 1000 "
             "draws + 1000 tune, beta likelihood. wall_s = fit_bayes call (compile, sample, "
             "prior/posterior predictive, log-likelihood, prior sensitivity); sample_s = model "
             "build + compile + sampling. cold = empty PyTensor cache, warm = cache from the cold "
             "run, each in a fresh process. ess_per_s = min bulk ESS / wall_s; s_to_ess_400 = "
             "wall time scaled to reach bulk ESS 400 on every parameter (the Must-show bar). "
             f"Fastest warm wall time: {fastest['sampler']} at {fastest['target_accept']} "
             f"({fastest['wall_s']:.1f} s); fastest to ESS 400: {best['sampler']} at "
             f"{best['target_accept']} ({best['s_to_ess_400']:.1f} s), "
             "the criterion for the default sampler. Other jobs shared the 2 cores while this "
             "ran.")
    print(notes, file=sys.stderr)
    if not args.no_results:
        from cram.core.benchlog import record_benchmark
        from cram.core.results import study_id

        title = "Sampler comparison: PyMC NUTS vs nutpie, hierarchical γ fit"
        path = record_benchmark(study_id(title), title, rows, cols, notes,
                                argv=["python", "scripts/bench_samplers.py", *sys.argv[1:]],
                                results=args.results, seeds=[args.seed])
        print(f"result file: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
