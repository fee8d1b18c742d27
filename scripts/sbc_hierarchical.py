"""Simulation-based calibration (SBC) of the hierarchical γ model (slow; run outside CI).

For each simulation: draw parameters from the prior, simulate a data set with the fixed design
(``--human`` human curves and ``--model`` model curves, delays 1..100 on a log grid; beta
likelihood, or binomial with ``--trials N`` per point), refit with nutpie, and record (a) the
rank of the true value among the posterior draws and (b) whether the central 90% interval
covers it. Calibrated inference gives uniform ranks and 90% coverage; the script exits non-zero
when a coverage leaves 90 ± ``--tol`` points (default 5).

The model is compiled once; each simulation swaps the observed data (``with_data``).

Usage::

    python scripts/sbc_hierarchical.py --sims 200 --seed 0 --out runs/sbc [--results DIR]

With ``--out``: ``sbc_ranks.csv``, ``sbc_coverage.csv``, ``sbc_summary.json`` and the rank
histograms ``sbc_ranks.png``. ``--pool OUT1 OUT2 ...`` fits nothing and pools the ranks of runs
made with different seeds into one table (200 simulations leave a Monte Carlo error of ±2.1
points on a 90% coverage; 800, ±1.1).

The coverage table is written as a result file (``cram.core.results``) into ``--results DIR``
(default ``$CRAM_RESULTS_DIR``, else ``./results``; the project's is the repository's
``results/``), unless ``--no-results``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

TRACKED = ("mu_gamma[human]", "mu_gamma[model]", "delta_gamma", "sigma_log_gamma[human]",
           "sigma_log_gamma[model]", "gamma[h0]", "gamma[m0]", "a_first[h0]")


def design(n_human: int, n_model: int, n_delays: int, trials: int | None = None) -> pd.DataFrame:
    """The fixed design: placeholder values (replaced by simulated data before every fit).

    With ``trials`` every point is a count of that many trials (binomial likelihood), else a
    proportion (beta likelihood).
    """
    t = np.unique(np.round(np.geomspace(1, 100, n_delays), 3))
    rows = []
    for g, k in (("human", n_human), ("model", n_model)):
        for i in range(k):
            for tt in t:
                rows.append({"curve": f"{g[0]}{i}", "group": g, "source": "sbc",
                             "delay_value": tt, "delay_unit": "u", "measure": "recall",
                             "value": 0.5 * tt ** -0.3, "derived": False,
                             "n": float(trials) if trials else np.nan,
                             "n_kind": "trials" if trials else None})
    return pd.DataFrame(rows)


def _inside_unit_interval(y: np.ndarray) -> np.ndarray:
    """Simulated proportions with only exact 0 and 1 (float underflow) moved inside (0, 1).

    A beta draw with a small shape parameter can round to 0.0; anything else is kept as drawn,
    so the data stay draws from the model (clipping at 1e-6 instead changed up to a fifth of the
    simulated data sets, those with the steepest curves).
    """
    return np.clip(y, np.finfo(float).tiny, np.nextafter(1.0, 0.0))


def _value(ds, name: str) -> np.ndarray:
    """Draws of ``name`` ('var' or 'var[coord]') flattened over (chain, draw)."""
    var, _, coord = name.partition("[")
    da = ds[var]
    if coord:
        dim = [d for d in da.dims if d not in ("chain", "draw")][0]
        da = da.sel({dim: coord.rstrip("]")})
    return np.asarray(da.values).reshape(-1)


def plot_ranks(ranks: pd.DataFrame, path: Path, bins: int = 10) -> None:
    """Rank histograms, one panel per quantity, with the 99% band of a uniform histogram.

    Calibrated inference gives flat histograms; a U shape means intervals too narrow, a hump
    too wide, a slope a biased posterior (Talts et al. 2018).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from scipy import stats

    names = list(dict.fromkeys(ranks["quantity"]))
    fig, axes = plt.subplots(2, math.ceil(len(names) / 2), figsize=(12, 5), sharey=True)
    for ax, name in zip(axes.ravel(), names):
        sub = ranks[ranks["quantity"] == name]
        counts = np.histogram(sub["rank"] / sub["n_rank"], bins=bins, range=(0, 1 + 1e-9))[0]
        lo, hi = stats.binom.interval(0.99, len(sub), 1 / bins)
        ax.axhspan(lo, hi, color="0.85", label="99% band, uniform")
        ax.bar(np.arange(bins) + 0.5, counts, width=0.9, color="tab:blue")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([0, bins / 2, bins], ["0", "0.5", "1"])
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    axes[0, 0].set_ylabel("simulations")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"SBC rank histograms ({ranks['sim'].nunique()} simulations; "
                 "normalised rank of the truth among the posterior draws)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def coverage_table(ranks: pd.DataFrame, level: float, tol: float) -> tuple[pd.DataFrame, list]:
    """Coverage, its Monte Carlo error and rank uniformity per quantity; the failed checks.

    A check fails when the coverage of a group γ or of Δγ leaves ``level`` ± ``tol`` points.
    """
    from scipy import stats

    rows, fail = [], []
    for name, sub in ranks.groupby("quantity", sort=False):
        n = len(sub)
        cov = 100 * sub["covered"].mean()
        mcse = 100 * math.sqrt(level * (1 - level) / n)
        counts = np.histogram(sub["rank"] / sub["n_rank"], bins=10, range=(0, 1 + 1e-9))[0]
        ok = abs(cov - 100 * level) <= tol
        if not ok and name in ("mu_gamma[human]", "mu_gamma[model]", "delta_gamma"):
            fail.append(name)
        rows.append({"quantity": name, "sims": n, "coverage_%": round(cov, 1),
                     "target_%": 100 * level, "mc_error_%": round(mcse, 1),
                     "rank_uniformity_p": round(float(stats.chisquare(counts).pvalue), 3),
                     "within_tol": ok})
    return pd.DataFrame(rows), fail


def pool(dirs: list[str], level: float, tol: float) -> tuple[pd.DataFrame, pd.DataFrame, list]:
    """The ranks of several runs' ``--out`` folders (run with different seeds), pooled."""
    parts = []
    for k, d in enumerate(dirs):
        f = Path(d) / "sbc_ranks.csv"
        if not f.is_file():
            raise SystemExit(f"sbc_hierarchical: --pool {d}: no sbc_ranks.csv there")
        part = pd.read_csv(f)
        part["sim"] = part["sim"] + 1_000_000 * k  # sims stay distinct across runs
        parts.append(part)
    ranks = pd.concat(parts, ignore_index=True)
    return (ranks, *coverage_table(ranks, level, tol))


def run_sims(args, target_accept: float) -> tuple[pd.DataFrame, float, list]:
    """Draw ``args.sims`` data sets from the prior and refit each: (ranks, compile s, fit s)."""
    import nutpie
    import pymc as pm
    from tqdm.auto import tqdm

    from cram.fitting.bayes import build_model, prepare
    from cram.fitting.mle import one_blas_thread
    from cram.fitting.rules import ComparisonRules

    rules = ComparisonRules(form="power", interval=args.level)
    md = prepare(design(args.human, args.model, args.delays, args.trials), rules)
    model = build_model(md, "power", hierarchical=True)
    t0 = time.perf_counter()
    with one_blas_thread():
        compiled = nutpie.compile_pymc_model(model)
    compile_s = time.perf_counter() - t0
    rng = np.random.default_rng(args.seed)
    with model:
        prior = pm.sample_prior_predictive(draws=args.sims, random_seed=rng)
    observed = "obs_binomial" if args.trials else "obs_beta"
    sims_y = prior.prior_predictive[observed].values.reshape(args.sims, -1)
    records, fit_s = [], []
    for i in tqdm(range(args.sims), desc="SBC fits", file=sys.stderr):
        c = (compiled.with_data(k_binomial=sims_y[i].astype("int64")) if args.trials
             else compiled.with_data(y_beta=_inside_unit_interval(sims_y[i])))
        t1 = time.perf_counter()
        with one_blas_thread():
            tr = nutpie.sample(c, draws=args.draws, tune=args.tune, chains=args.chains,
                               seed=int(rng.integers(2**31 - 1)), progress_bar=False,
                               target_accept=target_accept)
        fit_s.append(time.perf_counter() - t1)
        div = int(tr.sample_stats["diverging"].values.sum())
        records += _sim_records(i, prior.prior.isel(draw=[i]), tr.posterior, args.level, div)
    return pd.DataFrame(records), compile_s, fit_s


def _sim_records(i: int, truth_ds, post, level: float, div: int) -> list[dict]:
    """One simulation: each tracked quantity's truth, rank among the draws, and coverage."""
    records = []
    for name in TRACKED:
        truth = float(_value(truth_ds, name)[0])
        draws = _value(post, name)
        thin = draws[:: max(1, len(draws) // 199)][:199]  # ~199 draws: ranks 0..199
        lo, hi = np.quantile(draws, [(1 - level) / 2, 1 - (1 - level) / 2])
        records.append({"sim": i, "quantity": name, "truth": truth,
                        "post_mean": float(draws.mean()),
                        "rank": int((thin < truth).sum()), "n_rank": len(thin),
                        "covered": bool(lo <= truth <= hi), "divergences": div})
    return records


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sims", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--human", type=int, default=3, help="human curves in the design")
    ap.add_argument("--model", type=int, default=3, help="model curves in the design")
    ap.add_argument("--delays", type=int, default=8)
    ap.add_argument("--trials", type=int, default=None, metavar="N",
                    help="binomial likelihood with N trials per point (default: beta)")
    ap.add_argument("--draws", type=int, default=1000, help="draws per chain (the fit's default)")
    ap.add_argument("--tune", type=int, default=1000, help="tuning steps (the fit's default)")
    ap.add_argument("--target-accept", type=float, default=None,
                    help="NUTS target acceptance (default: the hierarchical fit's, "
                         "cram.fitting.bayes.TARGET_ACCEPT)")
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--level", type=float, default=0.90)
    ap.add_argument("--tol", type=float, default=5.0, help="coverage tolerance in points")
    ap.add_argument("--out", default=None,
                    help="folder for the ranks, the coverage table and the rank histograms")
    ap.add_argument("--pool", nargs="+", default=None, metavar="DIR",
                    help="fit nothing: pool the sbc_ranks.csv of earlier --out folders (runs "
                         "with different --seed) into one coverage table")
    ap.add_argument("--no-results", "--no-bench", dest="no_results", action="store_true",
                    help="write no result file")
    ap.add_argument("--results", default=None, metavar="DIR",
                    help="results folder (default $CRAM_RESULTS_DIR, else ./results; the "
                         "project's: results/ at the repository root)")
    args = ap.parse_args(argv)
    if args.sims < 1:
        ap.error("--sims must be >= 1")
    if args.trials is not None and args.trials < 1:
        ap.error("--trials must be >= 1")
    if args.target_accept is not None and not 0 < args.target_accept < 1:
        ap.error("--target-accept must be in (0, 1)")
    if not args.no_results:  # a folder that cannot take the result fails before any fit
        from cram.core.errors import CramError
        from cram.core.results import check_results_dir, default_results_dir

        try:
            check_results_dir(args.results or default_results_dir())
        except CramError as err:
            ap.error(str(err))
    if args.pool:
        return _pooled(args)

    from cram.fitting.bayes import TARGET_ACCEPT  # configures PyTensor's cache first

    warnings.filterwarnings("ignore")
    target_accept = args.target_accept or TARGET_ACCEPT["hierarchical"]
    ranks, compile_s, fit_s = run_sims(args, target_accept)
    cov_df, fail = coverage_table(ranks, args.level, args.tol)
    notes = (f"SBC of the hierarchical power model ({args.human} human + {args.model} model "
             f"curves x {args.delays} delays, "
             + (f"binomial likelihood, {args.trials} trials per point" if args.trials
                else "beta likelihood")
             + f"), {args.sims} simulations from the "
             f"prior, nutpie {args.chains} chains x {args.draws} draws (tune {args.tune}, "
             f"target acceptance {target_accept}). "
             f"Coverage of the central {args.level:.0%} interval; the Monte Carlo error is the "
             f"binomial standard error sqrt(p(1-p)/sims) at p = {args.level}. "
             f"Tolerance ±{args.tol} "
             f"points (checked for mu_gamma and delta_gamma). Rank uniformity: chi-square over 10 "
             f"bins. Simulations with any divergence: {_fits_with_divergences(ranks)}/"
             f"{args.sims}. Compile {compile_s:.1f} s; median fit {np.median(fit_s):.2f} s. "
             + ("PASS" if not fail else f"FAIL: {fail}"))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        ranks.to_csv(out / "sbc_ranks.csv", index=False)
        cov_df.to_csv(out / "sbc_coverage.csv", index=False)
        (out / "sbc_summary.json").write_text(json.dumps({"notes": notes, "fail": fail}, indent=2))
        plot_ranks(ranks, out / "sbc_ranks.png")
    return _report(args, _title(args, pooled=False), cov_df, notes, fail,
                   variant=f"target acceptance {target_accept}; seed {args.seed}",
                   seeds=[args.seed])


def _pooled(args) -> int:
    """``--pool``: one coverage table (and rank histograms with ``--out``) over several runs."""
    ranks, cov_df, fail = pool(args.pool, args.level, args.tol)
    n_sims = ranks["sim"].nunique()
    notes = (f"Pooled SBC: {n_sims} simulations from {len(args.pool)} runs with different "
             f"seeds ({', '.join(args.pool)}); coverage of the central {args.level:.0%} "
             f"interval, Monte Carlo error sqrt(p(1-p)/sims), tolerance ±{args.tol} points. "
             f"Simulations with any divergence: {_fits_with_divergences(ranks)}/{n_sims}. "
             + ("PASS" if not fail else f"FAIL: {fail}"))
    if args.out:
        plot_ranks(ranks, Path(args.out) / "sbc_ranks.png")
    return _report(args, _title(args, pooled=True), cov_df, notes, fail,
                   variant=f"{n_sims} simulations from {len(args.pool)} runs")


def _title(args, pooled: bool) -> str:
    """The table's title (its study): pooled or one run, beta or binomial likelihood."""
    likelihood = (f", binomial likelihood ({args.trials} trials per point)" if args.trials
                  else "")
    return (f"SBC{', pooled runs' if pooled else ''}: hierarchical γ model{likelihood}, "
            f"coverage of the {args.level:.0%} interval")


def _fits_with_divergences(ranks: pd.DataFrame) -> int:
    return int((ranks.groupby("sim")["divergences"].first() > 0).sum())


def _report(args, title: str, cov_df: pd.DataFrame, notes: str, fail: list,
            variant: str | None = None, seeds: list[int] | None = None) -> int:
    """Print the table and notes, write their result file unless ``--no-results``; exit code."""
    print(cov_df.to_string(index=False), file=sys.stderr)
    print(notes, file=sys.stderr)
    if not args.no_results:
        from cram.core.benchlog import record_benchmark
        from cram.core.results import study_id

        path = record_benchmark(study_id(title), title, cov_df.to_dict("records"), notes=notes,
                                argv=["python", "scripts/sbc_hierarchical.py", *sys.argv[1:]],
                                results=args.results, variant=variant, seeds=seeds,
                                extra={"passed": not fail})
        print(f"result file: {path}", file=sys.stderr)
    return 1 if fail else 0


if __name__ == "__main__":
    sys.exit(main())
