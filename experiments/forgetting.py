"""``cram bench forgetting``: the model studied like a participant (issue 29).

Each model trains under the study protocol (``tasks/study.py``: staggered cohorts of library
bindings, massed or spaced, then retired; every test queries each binding with its store removed).
The run folders' ``forgetting.csv`` give the curves and the classic findings, each measured per
seed and reported as a mean with a 95% t-interval over seeds (whichever way it falls):

- **(a) form**: the final test's retention against delay, fitted by power, exponential and
  hyperbolic curves above chance (binomial maximum likelihood), compared by leave-one-delay-out
  cross-validation (the summed log predictive density of each held-out delay, all seeds, with
  the standard error of the difference; Wixted & Ebbesen 1991 compared forms by fit);
- **(b) Jost's law**: of two memories, the older loses less over the same interval. Measured on
  all tests of retired bindings: the exponential decay rate fitted to delays under 100 steps
  against the rate fitted to older delays;
- **(c) spacing**: spaced minus massed retention at the final test, delays of at least
  ``long_delay`` steps (same exposures, same last exposure);
- **(d) consolidation**: the model's retention minus its retention with the semantic tier's
  output zeroed (what the semantic tier carries), and its retention forced to the semantic tier
  minus its own (what the tier holds that the router does not use), at the final test;
- **(e) savings** on relearning (Ebbinghaus's measure): from the last checkpoint, training goes on
  with the retired bindings and the held-out (never shown) ones studied side by side, cue-answer,
  for ``RELEARN_STEPS`` steps, tested at ``RELEARN_CHECKS``. Savings are
  ``(T_new − T_old) / T_new`` with T the relearning steps to reach ``criterion`` (interpolated
  between tests; a curve that never reaches it counts as the last step), and the mean accuracy
  gap over the tests beside it. The run folder is not changed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .bench import mean_interval

FORGETTING_MODELS = ("cram", "cram-no-consolidation", "transformer", "ct-only")
STUDY_OVERRIDES = ("study.protocol=study-test",)
FORMS = ("power", "exponential", "hyperbolic")
RELEARN_STEPS = 32
RELEARN_CHECKS = (0, 1, 2, 4, 8, 16, 32)
RELEARN_COLUMNS = ["model", "seed", "relearn_step", "old_accuracy", "new_accuracy", "old_n",
                   "new_n"]
CURVE_COLUMNS = ["model", "ablation", "schedule", "delay_steps", "delay_sequences", "seeds",
                 "accuracy", "accuracy_lo", "accuracy_hi", "n"]
FINDING_COLUMNS = ["finding", "model", "measure", "estimate", "lo", "hi", "seeds", "reading"]


def binding_rows(run) -> pd.DataFrame:
    """The run's ``forgetting.csv`` with ``model`` and ``seed`` columns (an empty frame if none)."""
    f = run.forgetting
    if f is None or not len(f):
        return pd.DataFrame()
    return f.assign(model=run.model, seed=run.seed)


def final_test(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of each run's last test of retired bindings."""
    last = df.groupby(["model", "seed"])["step"].transform("max")
    return df[(df["step"] == last) & (df["phase"] == "retired")]


def _pooled(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    g = df.groupby(keys, dropna=False)[["n", "correct"]].sum().reset_index()
    return g.assign(accuracy=g["correct"] / g["n"])


def curve_rows(df: pd.DataFrame) -> list[dict]:
    """Final-test retention per model × ablation × schedule × delay: mean over seeds, interval."""
    fin = final_test(df)
    rows = []
    for schedule, part in (("all", fin), *fin.groupby("schedule")):
        per_seed = _pooled(part, ["model", "ablation", "delay_steps", "delay_sequences", "seed"])
        for (model, ablation, delay, seqs), g in per_seed.groupby(
                ["model", "ablation", "delay_steps", "delay_sequences"]):
            mean, lo, hi = mean_interval(g["accuracy"])
            rows.append({"model": model, "ablation": ablation, "schedule": schedule,
                         "delay_steps": int(delay), "delay_sequences": int(seqs),
                         "seeds": int(g["seed"].nunique()), "accuracy": mean, "accuracy_lo": lo,
                         "accuracy_hi": hi, "n": int(g["n"].sum())})
    return rows


# ------------------------------------------------------------------ (a) the form of forgetting
def _form(name: str, t: np.ndarray, a: float, rate: float) -> np.ndarray:
    """Share of the above-chance range retained at delay ``t`` (a in (0, 1], rate > 0)."""
    if name == "power":
        return a * (1.0 + t) ** (-rate)
    if name == "exponential":
        return a * np.exp(-rate * t)
    return a / (1.0 + rate * t)  # hyperbolic


#: bounds of the fitted (logit share, log rate): a flat or empty stretch of curve must not send
#: a rate to a numerical extreme (log rate −12: no loss in 10^5 steps; +3: gone in one step)
LOGIT_BOUNDS, LOG_RATE_BOUNDS = (-10.0, 10.0), (-12.0, 3.0)


def _bounded(params) -> tuple[float, float]:
    """(retained share a, rate) from the optimiser's unconstrained pair, within the bounds."""
    logit = float(np.clip(params[0], *LOGIT_BOUNDS))
    return 1 / (1 + np.exp(-logit)), float(np.exp(np.clip(params[1], *LOG_RATE_BOUNDS)))


def _nll(params, name, t, n, k, chance):
    a, rate = _bounded(params)
    p = chance + (1 - chance) * _form(name, t, a, rate)
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return -float(np.sum(k * np.log(p) + (n - k) * np.log1p(-p)))


def fit_form(name: str, t, n, k, chance: float) -> tuple[np.ndarray, float]:
    """Binomial maximum-likelihood fit of one form above ``chance``; (params, nll)."""
    from scipy.optimize import minimize

    best = None
    for a0 in (0.0, 2.5):  # logit of the retained share
        for r0 in (-5.0, -1.5):  # log rate
            res = minimize(_nll, np.array([a0, r0]), args=(name, t, n, k, chance),
                           method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-8})
            if best is None or res.fun < best.fun:
                best = res
    return best.x, float(best.fun)


def loo_pointwise(name: str, t, n, k, chance: float) -> np.ndarray:
    """Leave-one-delay-out log predictive density of each delay (binomial, refitted per delay)."""
    from scipy.stats import binom

    out = np.empty(len(t))
    for i in range(len(t)):
        keep = np.arange(len(t)) != i
        x, _ = fit_form(name, t[keep], n[keep], k[keep], chance)
        a, rate = _bounded(x)
        p = chance + (1 - chance) * _form(name, t[i:i + 1], a, rate)[0]
        out[i] = float(binom.logpmf(k[i], n[i], np.clip(p, 1e-9, 1 - 1e-9)))
    return out


#: retention at the shortest delays must exceed chance by this much for a curve to have a form
LEARNED_MARGIN = 0.1


def learned_above_chance(final: pd.DataFrame, chance: float) -> float:
    """Pooled last-test accuracy at the two shortest delays, minus chance (what there is to lose).

    ``final``: last-test rows of retired bindings (one model, ablation ``none``, any seeds).
    """
    shortest = sorted(final["delay_steps"].unique())[:2]
    part = final[final["delay_steps"].isin(shortest)]
    return float(part["correct"].sum() / max(part["n"].sum(), 1)) - chance


def _nothing_learned(model: str, finding: str, measure: str, above: float) -> dict:
    return {"finding": finding, "model": model, "measure": measure, "estimate": math.nan,
            "lo": math.nan, "hi": math.nan, "seeds": 0,
            "reading": f"not measurable: at the shortest delays retention is {above:+.3f} from "
                       f"chance (under {LEARNED_MARGIN}): nothing was learned to forget"}


def form_rows(df: pd.DataFrame, chance: float) -> list[dict]:
    """(a): per model, ΔELPD of power against exponential and hyperbolic.

    Each seed's final-test curve is cross-validated by leaving one delay out; the held-out log
    densities of all seeds are summed per form, and the difference carries the usual standard
    error ``sqrt(N) * sd(pointwise differences)`` over the N held-out points (as ``az.compare``).
    """
    fin = final_test(df[df["ablation"] == "none"])
    rows = []
    for model, part in fin.groupby("model"):
        above = learned_above_chance(part, chance)
        if above < LEARNED_MARGIN:
            rows += [_nothing_learned(model, "a", f"ΔELPD power − {other} (leave-one-delay-out, "
                                      "final test)", above) for other in FORMS[1:]]
            continue
        point = {f: [] for f in FORMS}
        seeds = 0
        for _, g in _pooled(part, ["seed", "delay_steps"]).groupby("seed"):
            t, n, k = (g[c].to_numpy(float) for c in ("delay_steps", "n", "correct"))
            seeds += 1
            for f in FORMS:
                point[f].append(loo_pointwise(f, t, n, k, chance))
        for other in FORMS[1:]:
            diff = np.concatenate(point["power"]) - np.concatenate(point[other])
            se = math.sqrt(diff.size) * diff.std(ddof=1) if diff.size > 1 else math.nan
            mean = float(diff.sum())
            rows.append({"finding": "a", "model": model,
                         "measure": f"ΔELPD power − {other} (leave-one-delay-out, final test)",
                         "estimate": mean, "lo": mean - 1.96 * se, "hi": mean + 1.96 * se,
                         "seeds": seeds, "reading": _favours(mean, mean - 1.96 * se,
                                                             mean + 1.96 * se, "power", other)})
    return rows


def _favours(mean, lo, hi, first: str, second: str) -> str:
    if not np.isfinite(lo):
        return f"{first if mean > 0 else second} ahead on one point"
    if lo > 0:
        return f"{first} fits better (the 95% interval of ΔELPD is above 0)"
    if hi < 0:
        return f"{second} fits better (the 95% interval of ΔELPD is below 0)"
    return "neither form is favoured (the interval spans 0)"


# ------------------------------------------------------------------ (b) Jost's law
def jost_rows(df: pd.DataFrame, chance: float, split: int = 100) -> list[dict]:
    """(b): the exponential decay rate of young (delay < ``split``) against old memories.

    All tests of retired bindings, pooled per delay, are split at ``split`` steps; an exponential
    above chance is fitted to each part (binomial maximum likelihood). Jost's law says the old
    part decays more slowly: log(rate young) − log(rate old) > 0. A single exponential has one
    rate at every age (difference 0); a power law's rate falls with age.
    """
    ret = df[(df["ablation"] == "none") & (df["phase"] == "retired")]
    rows = []
    for model, part in ret.groupby("model"):
        above = learned_above_chance(final_test(part), chance)
        if above < LEARNED_MARGIN:
            rows.append(_nothing_learned(model, "b", f"log decay rate, young (< {split} steps) "
                                         f"− old (>= {split})", above))
            continue
        diffs = []
        for _, s in part.groupby("seed"):
            g = _pooled(s, ["delay_steps"])
            rates = []
            for sel in (g["delay_steps"] < split, g["delay_steps"] >= split):
                t, n, k = (g.loc[sel, c].to_numpy(float) for c in ("delay_steps", "n", "correct"))
                if len(t) < 2:
                    break
                x, _ = fit_form("exponential", t - t.min(), n, k, chance)
                rates.append(float(np.log(_bounded(x)[1])))  # log rate
            if len(rates) == 2:
                diffs.append(rates[0] - rates[1])
        mean, lo, hi = mean_interval(diffs)
        rows.append({"finding": "b", "model": model,
                     "measure": f"log decay rate, young (< {split} steps) − old (>= {split})",
                     "estimate": mean, "lo": lo, "hi": hi, "seeds": len(diffs),
                     "reading": _sign_reading(mean, lo, hi, "older memories decay more slowly "
                                              "(Jost's law holds)", "older memories decay faster")
                     if diffs else "not measurable: too few tests on one side of the split"})
    return rows


def _sign_reading(mean, lo, hi, positive: str, negative: str) -> str:
    if not np.isfinite(lo):
        return f"one seed: {positive if mean > 0 else negative}"
    if lo > 0:
        return positive
    if hi < 0:
        return negative
    return "no difference resolved (the interval spans 0)"


# ------------------------------------------------------------------ (c) spacing, (d) consolidation
def spacing_rows(df: pd.DataFrame, long_delay: int = 100) -> list[dict]:
    """(c): spaced − massed retention at the final test, delays >= ``long_delay``."""
    fin = final_test(df[(df["ablation"] == "none") & (df["delay_steps"] >= long_delay)])
    rows = []
    for model, part in fin.groupby("model"):
        per = _pooled(part, ["seed", "schedule"]).pivot(index="seed", columns="schedule",
                                                        values="accuracy")
        diff = (per.get("spaced") - per.get("massed")).dropna() if {"spaced", "massed"} <= set(
            per.columns) else pd.Series(dtype=float)
        mean, lo, hi = mean_interval(diff)
        rows.append({"finding": "c", "model": model,
                     "measure": f"accuracy spaced − massed, delay >= {long_delay} steps",
                     "estimate": mean, "lo": lo, "hi": hi, "seeds": len(diff),
                     "reading": _sign_reading(mean, lo, hi, "spacing helps at long delays",
                                              "massed study is retained better")})
    return rows


def consolidation_rows(df: pd.DataFrame) -> list[dict]:
    """(d): what the semantic tier carries at the last test, retired bindings, all delays.

    Two differences per model with tiers: retention minus retention with the semantic output
    zeroed (what the router's own choice takes from the semantic tier), and retention with every
    layer forced to the semantic tier minus retention under the router's own choice (what the
    tier holds that the router does not use).
    """
    fin = final_test(df)
    rows = []
    for model, part in fin.groupby("model"):
        per = _pooled(part, ["seed", "ablation"]).pivot(index="seed", columns="ablation",
                                                        values="accuracy")
        if "semantic_zeroed" not in per.columns:
            continue
        for (a, b), measure, positive, negative in (
                (("none", "semantic_zeroed"), "accuracy − accuracy with the semantic output "
                 "zeroed (retired bindings, final test)", "the semantic tier carries retention",
                 "zeroing the semantic tier helps"),
                (("semantic_only", "none"), "accuracy forced to the semantic tier − accuracy "
                 "under the router's own choice", "the semantic tier holds more than the router "
                 "uses", "the router's choice beats the semantic tier alone")):
            if a not in per.columns or b not in per.columns:
                continue
            diff = (per[a] - per[b]).dropna()
            mean, lo, hi = mean_interval(diff)
            rows.append({"finding": "d", "model": model, "measure": measure, "estimate": mean,
                         "lo": lo, "hi": hi, "seeds": len(diff),
                         "reading": _sign_reading(mean, lo, hi, positive, negative)})
    return rows


# ------------------------------------------------------------------ (e) savings on relearning
def relearning_rows(run_dir: Path, steps: int = RELEARN_STEPS, checks=RELEARN_CHECKS,
                    device: str = "cpu") -> list[dict]:
    """Relearn a finished studied run's retired and held-out bindings; accuracy at ``checks``.

    Training continues from the last checkpoint (weights, optimiser, routing schedule) on
    cue-answer batches whose library slots draw from the recurring bindings and, ``weight``
    times over, the retired and the held-out ones. Nothing is written to the run folder.
    """
    import torch

    from cram.consolidation.api import run_task
    from cram.consolidation.checkpoint import load_trained
    from cram.consolidation.forgetting import probe_bindings
    from cram.consolidation.restore import fresh_state, restore
    from cram.consolidation.train import train_step
    from cram.core.runs import load_run
    from cram.models import DataSpec
    from cram.tasks.srcd_stream import stream_rng
    from cram.tasks.study import studied

    run = load_run(run_dir)
    trained = load_trained(Path(run_dir))
    config, t = trained.config, trained.config.train
    task = studied(run_task(run_dir, config), config.study, t.steps)
    schedule = task.schedule
    ts = fresh_state(run.model, config, run.seed, 0, torch.device(device),
                     spec=DataSpec(**task.data_spec), n_library=task.n_library)
    restore(ts, trained.state, 0)
    relearned = np.concatenate([schedule.studied_patterns, schedule.held_out])
    pool = np.sort(np.concatenate([schedule.recurring,
                                   np.repeat(relearned, config.study.weight)]))
    test_set = task.test_set(t.eval_seed)
    old, new = set(schedule.studied_patterns.tolist()), set(schedule.held_out.tolist())
    rows = []
    for r in range(steps + 1):
        if r in checks:
            pattern, correct = probe_bindings(ts.model, test_set, task, t.eval_batch_size,
                                              device, ablations=False)["none"]
            is_old, is_new = np.isin(pattern, list(old)), np.isin(pattern, list(new))
            rows.append({"model": run.model, "seed": run.seed, "relearn_step": r,
                         "old_accuracy": float(correct[is_old].mean()),
                         "new_accuracy": float(correct[is_new].mean()),
                         "old_n": int(is_old.sum()), "new_n": int(is_new.sum())})
        if r == steps:
            break
        step = t.steps + r
        batch = task.task.sample(t.batch_size, stream_rng(run.seed, 0x5E1E, step),
                                 library=pool, hide=relearned).to_torch(device)
        train_step(ts, ts.model, batch, step, ts.schedule.temperature(step), t.lr, t,
                   task=task)
    return rows


def steps_to(curve: pd.DataFrame, column: str, criterion: float) -> float:
    """Relearning steps until ``column`` first reaches ``criterion`` (linear between tests)."""
    x, y = curve["relearn_step"].to_numpy(float), curve[column].to_numpy(float)
    if y[0] >= criterion:
        return 0.0
    for i in range(1, len(x)):
        if y[i] >= criterion:
            return float(x[i - 1] + (criterion - y[i - 1]) / (y[i] - y[i - 1]) * (x[i] - x[i - 1]))
    return float(x[-1])


def savings_rows(relearn: pd.DataFrame, criterion: float = 0.6) -> list[dict]:
    """(e): Ebbinghaus's savings and the mean accuracy gap, old − new, per model over seeds."""
    rows = []
    for model, part in relearn.groupby("model"):
        savings, gap = [], []
        for _, c in part.groupby("seed"):
            c = c.sort_values("relearn_step")
            t_new, t_old = steps_to(c, "new_accuracy", criterion), steps_to(c, "old_accuracy",
                                                                             criterion)
            if t_new > 0:
                savings.append((t_new - t_old) / t_new)
            gap.append(float((c["old_accuracy"] - c["new_accuracy"]).mean()))
        for measure, values, positive in (
                (f"savings (T_new − T_old) / T_new, criterion {criterion}", savings,
                 "relearning is faster than new learning (savings)"),
                ("mean accuracy while relearning, old − new", gap,
                 "old bindings are ahead while relearning")):
            mean, lo, hi = mean_interval(values)
            rows.append({"finding": "e", "model": model, "measure": measure, "estimate": mean,
                         "lo": lo, "hi": hi, "seeds": len(values),
                         "reading": _sign_reading(mean, lo, hi, positive,
                                                  "old bindings are relearned more slowly")
                         if values else "not measurable: new bindings at criterion at once"})
    return rows


def finding_rows(df: pd.DataFrame, chance: float, relearn: pd.DataFrame | None = None
                 ) -> list[dict]:
    """The table of findings (a)-(e); (e) only where relearning curves are given."""
    rows = (form_rows(df, chance) + jost_rows(df, chance) + spacing_rows(df)
            + consolidation_rows(df))
    if relearn is not None and len(relearn):
        rows += savings_rows(relearn)
    else:
        rows.append({"finding": "e", "model": "all", "measure": "savings on relearning",
                     "estimate": math.nan, "lo": math.nan, "hi": math.nan, "seeds": 0,
                     "reading": "not measured in this call (relearning curves not given)"})
    return rows


def run_forgetting(models, preset: str, seeds: int, root: Path, overrides: list[str],
                   progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train (or reuse) every model × seed under ``root`` with the study protocol on.

    Returns the runs' forgetting rows and their relearning curves (``relearning_rows``).
    """
    from cram.core.runs import load_run

    from .bench import ensure_run

    frames, relearn = [], []
    for model in models:
        for seed in range(seeds):
            run_dir = ensure_run(model, preset, seed, root / f"{model}-seed{seed}",
                                 [*STUDY_OVERRIDES, *overrides], progress=progress)
            frames.append(binding_rows(load_run(run_dir)))
            relearn += relearning_rows(run_dir)
    return pd.concat(frames, ignore_index=True), pd.DataFrame(relearn)
