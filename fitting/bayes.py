"""Bayesian forgetting-curve fits with PyMC: one curve or a hierarchy of curves.

Model (one row per point, ``t`` from the comparison rules, curves ``c``)::

    R_c(t)      = form(t; θ_c)                       mean curve, clipped to [1e-6, 1 − 1e-6]
    value       ~ Binomial(n, R_c(t)) / n            where n counts trials (n_kind trials/queries)
    value       ~ Beta(mean R_c(t), precision φ_c)   otherwise (proportions, n unknown)
    θ_c         ~ form.priors (per curve, independent)

and, for forms with a power exponent γ, either per curve γ_c ~ LogNormal(log 0.3, 0.6) (single
curve / ``hierarchical=False``) or, hierarchically over curves with group g(c) ∈ {human, model},

    m[g] ~ Normal(log 0.3, 0.6),  s[g] ~ HalfNormal(0.5),  z_c ~ Normal(0, 1)
    γ_c  = exp(m[g(c)] + s[g(c)] · z_c)                   (non-centred, γ > 0)
    mu_gamma[g] = exp(m[g])                               (group γ: median γ of its curves)
    Δγ   = mu_gamma[model] − mu_gamma[human]              (when both groups are present)

For the power form the per-curve height is sampled at the curve's first fitted time t1:
``a_first ~ Beta(2, 1.5)`` and ``a = a_first · t1^γ`` (so R <= a_first < 1, no clipping).
Parameters in units of t (``Form.time_scaled``: the logistic step's ``t0`` and ``w``) are
sampled as ratios to the curve's last fitted time t_max (``t0_rel``, ``w_rel``), so that one prior
fits steps, hours and intervening items; ``t0 = t0_rel · t_max`` is kept as a deterministic.

Priors are documented in docs/fitting.md with the reasons. Results are ArviZ InferenceData
(posterior, sample_stats, observed_data, prior, prior_predictive, posterior_predictive,
log_likelihood, log_prior), a tidy ``az.summary`` frame and diagnostics that are never hidden.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

from cram.fitting._pytensor_env import configure_compiledir

configure_compiledir()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cram.core.errors import ConfigError  # noqa: E402
from cram.fitting.forms import Form, Prior, get_form  # noqa: E402
from cram.fitting.likelihoods import choose_likelihood, squeeze01  # noqa: E402
from cram.fitting.rules import ComparisonRules, apply_rules  # noqa: E402

SAMPLERS = ("nutpie", "pymc")
#: the default: PyMC's NUTS reached bulk ESS 400 on every parameter sooner than nutpie on the
#: hierarchical fit (nutpie: less wall time per 1000 draws, but about 1/5 of the ESS on the
#: worst parameter); see docs/benchmarks.md
DEFAULT_SAMPLER = "pymc"
PHI_PRIOR = Prior("lognormal", (math.log(50.0), 1.0))
SIGMA_PRIOR = Prior("halfnormal", (0.1,))
#: power form: prior on the curve's value at its first fitted time (a proportion)
A_FIRST_PRIOR = Prior("beta", (2.0, 1.5))
#: spread of log γ across curves within a group
SIGMA_LOG_GAMMA_PRIOR = Prior("halfnormal", (0.5,))
#: NUTS target acceptance. Hierarchical fits: 0.99. In SBC (200 data sets drawn from the prior,
#: 3 + 3 curves x 8 delays, 2 x 1000 draws after 1000 tuning steps) 119 fits had divergent
#: transitions at 0.9 and 5 at 0.99, for about 1.7x the sampling time (docs/fitting.md,
#: "Sampler settings"). Fits of single curves (no funnel) keep 0.9.
TARGET_ACCEPT = {"hierarchical": 0.99, "per_curve": 0.9}
RHAT_MAX = 1.01
ESS_MIN = 400


def _pm():
    import pymc as pm

    return pm


def _dist(name: str, prior: Prior, **kw):
    pm = _pm()
    k, a = prior.kind, prior.args
    if k == "normal":
        return pm.Normal(name, mu=a[0], sigma=a[1], **kw)
    if k == "lognormal":
        return pm.LogNormal(name, mu=a[0], sigma=a[1], **kw)
    if k == "beta":
        return pm.Beta(name, alpha=a[0], beta=a[1], **kw)
    if k == "halfnormal":
        return pm.HalfNormal(name, sigma=a[0], **kw)
    raise ConfigError(f"unknown prior kind {k!r} for {name}")


@dataclass
class ModelData:
    """The fitted points laid out for the PyMC model."""

    data: pd.DataFrame  # tidy rows after the rules, with 't'
    curves: list[str]
    groups: list[str]  # group of each curve
    group_names: list[str]  # groups present, in order human, model
    lik: dict  # curve -> likelihood
    curve_idx: np.ndarray  # (n_obs,)
    obs_labels: list[str]


def prepare(df: pd.DataFrame, rules: ComparisonRules, likelihood: str = "auto") -> ModelData:
    """Apply the rules (pooled: derived curves out) and choose each curve's likelihood."""
    data = apply_rules(df, rules, pooled=True, where="Bayesian fit")
    curves = list(dict.fromkeys(data["curve"]))
    groups = [str(data.loc[data["curve"] == c, "group"].iloc[0]) for c in curves]
    group_names = [g for g in ("human", "model") if g in groups]
    lik = {c: choose_likelihood(data[data["curve"] == c], likelihood, bayes=True) for c in curves}
    cidx = data["curve"].map({c: i for i, c in enumerate(curves)}).to_numpy()
    return ModelData(data, curves, groups, group_names, lik, cidx, obs_labels(data))


def obs_labels(data: pd.DataFrame) -> list[str]:
    """The label of each fitted point (``curve|delay``), the coordinate of its log-likelihood."""
    labels = [f"{c}|{d:g}" for c, d in zip(data["curve"], data["delay_value"])]
    if len(set(labels)) != len(labels):
        labels = [f"{lab}#{i}" for i, lab in enumerate(labels)]
    return labels


def build_model(md: ModelData, form: str | Form, hierarchical: bool | None = None,
                gamma_prior: Prior | None = None, prior_scale: float = 1.0):
    """Build the PyMC model (see the module docstring). Returns ``pymc.Model``.

    ``prior_scale`` multiplies the spread of every prior (for prior-sensitivity refits).
    """
    pm = _pm()
    import pytensor.tensor as pt

    fm = get_form(form)
    if hierarchical is None:
        hierarchical = len(md.curves) > 1
    d = md.data
    coords = {"curve": md.curves, "group": md.group_names}
    rows = {k: np.flatnonzero(np.array([md.lik[c] == k for c in d["curve"]]))
            for k in ("beta", "binomial", "normal")}
    for k, r in rows.items():
        if len(r):
            coords[f"point_{k}"] = [md.obs_labels[i] for i in r]
    with pm.Model(coords=coords) as model:
        t = pm.Data("t", d["t"].to_numpy(float))
        params = {}
        centred_power = fm.name == "power"
        # parameters in units of t (logistic t0, w): prior on their ratio to the curve's last t
        t_max = np.array([d.loc[d["curve"] == c, "t"].max() for c in md.curves])
        t_max = np.where(t_max > 0, t_max, 1.0)
        for p in fm.params:
            if p == "gamma" or (centred_power and p == "a"):
                continue
            prior = fm.priors[p].scaled(prior_scale)
            if p in fm.time_scaled:
                ratio = _dist(f"{p}_rel", prior, dims="curve")
                params[p] = pm.Deterministic(p, ratio * t_max, dims="curve")
            else:
                params[p] = _dist(p, prior, dims="curve")
        if fm.has_gamma:
            gp = (gamma_prior or fm.priors["gamma"]).scaled(prior_scale)
            if gp.kind != "lognormal":
                raise ConfigError(f"γ prior must be lognormal (γ > 0); got {gp.describe()}")
            params["gamma"] = (_hierarchical_gamma(md, gp, prior_scale) if hierarchical
                               else _dist("gamma", gp, dims="curve"))
        if centred_power:
            # Sample the curve's value at its first fitted time t1 instead of a (a proportion,
            # so R(t) = a_first · (t / t1)^(−γ) <= a_first < 1 for γ > 0: the mean never needs
            # clipping); a = a_first · t1^γ is kept as a deterministic.
            t_first = np.array([d.loc[d["curve"] == c, "t"].min() for c in md.curves])
            a_first = _dist("a_first", A_FIRST_PRIOR.scaled(prior_scale), dims="curve")
            params["a"] = pm.Deterministic("a", a_first * t_first ** params["gamma"],
                                           dims="curve")
        cidx = md.curve_idx
        mu = fm.fn(t, {p: v[cidx] for p, v in params.items()}, pt)
        mu = pm.math.clip(mu, 1e-6, 1 - 1e-6)
        _observe(model, md, rows, mu, prior_scale)
    return model


def _hierarchical_gamma(md: ModelData, gp: Prior, prior_scale: float):
    """γ per curve from its group (inside the model context); adds mu_gamma and delta_gamma.

    log γ_c = μ_g + σ_g z_c (non-centred); the group γ is exp(μ_g), the median of its curves' γ;
    Δγ compares group γs.
    """
    pm = _pm()
    import pytensor.tensor as pt

    gidx = np.array([md.group_names.index(g) for g in md.groups], dtype=int)
    mu_lg = pm.Normal("mu_log_gamma", gp.args[0], gp.args[1], dims="group")
    sd_lg = _dist("sigma_log_gamma", SIGMA_LOG_GAMMA_PRIOR.scaled(prior_scale), dims="group")
    z = pm.Normal("z_gamma", 0.0, 1.0, dims="curve")
    gamma = pm.Deterministic("gamma", pt.exp(mu_lg[gidx] + sd_lg[gidx] * z), dims="curve")
    mu_g = pm.Deterministic("mu_gamma", pt.exp(mu_lg), dims="group")
    if len(md.group_names) == 2:
        pm.Deterministic("delta_gamma", mu_g[1] - mu_g[0])
    return gamma


def _curve_index(model, md: ModelData, rows, kind: str) -> tuple[list, np.ndarray]:
    """Add the coord ``curve_<kind>`` (curves with that likelihood); each row's index in it."""
    curves = [c for c in md.curves if md.lik[c] == kind]
    model.add_coord(f"curve_{kind}", curves)
    position = {c: i for i, c in enumerate(curves)}
    return curves, np.array([position[c] for c in md.data["curve"].iloc[rows]], dtype=int)


def _observe(model, md: ModelData, rows: dict, mu, prior_scale: float) -> None:
    """The likelihood of each point (beta, binomial or normal), inside the model context."""
    pm = _pm()
    d = md.data
    y = d["value"].to_numpy(float)
    if len(rows["beta"]):
        r = rows["beta"]
        beta_curves, bidx = _curve_index(model, md, r, "beta")
        phi = _dist("phi", PHI_PRIOR.scaled(prior_scale), dims="curve_beta")
        yb = np.empty(len(r))
        for c in beta_curves:  # squeeze exact 0/1 per curve
            sel = np.flatnonzero(d["curve"].iloc[r].to_numpy() == c)
            yb[sel] = squeeze01(y[r][sel])
        y_beta = pm.Data("y_beta", yb, dims="point_beta")
        pm.Beta("obs_beta", mu=mu[r], nu=phi[bidx], observed=y_beta, dims="point_beta")
    if len(rows["binomial"]):
        r = rows["binomial"]
        n = d["n"].to_numpy(float)[r].astype("int64")
        k = np.round(y[r] * n).astype("int64")
        k_obs = pm.Data("k_binomial", k, dims="point_binomial")
        pm.Binomial("obs_binomial", n=n, p=mu[r], observed=k_obs, dims="point_binomial")
    if len(rows["normal"]):
        r = rows["normal"]
        _, nidx = _curve_index(model, md, r, "normal")
        sig = _dist("sigma", SIGMA_PRIOR.scaled(prior_scale), dims="curve_normal")
        y_n = pm.Data("y_normal", y[r], dims="point_normal")
        pm.Normal("obs_normal", mu=mu[r], sigma=sig[nidx], observed=y_n, dims="point_normal")


OBS_VARS = ("obs_beta", "obs_binomial", "obs_normal")


@dataclass
class BayesFitResult:
    """A Bayesian fit: ArviZ data, tidy summary, per-curve γ, Δγ, diagnostics, checks."""

    idata: object
    summary: pd.DataFrame
    curves: pd.DataFrame  # the tidy data actually fitted
    form: str
    rules: dict
    likelihoods: dict
    hierarchical: bool
    sampler: str
    seed: int
    diagnostics: dict
    gamma_table: pd.DataFrame
    delta_gamma: dict | None
    timings: dict
    loo: dict | None = None
    ppc: pd.DataFrame | None = None
    prior_pc: pd.DataFrame | None = None
    prior_sensitivity: pd.DataFrame | None = None
    warnings: list = field(default_factory=list)
    target_accept: float | None = None  # the NUTS target acceptance the fit ran with

    def to_json_doc(self) -> dict:
        """The ``--json`` document (``curves``, ``delta_gamma``, ``diagnostics`` and more)."""
        return {"curves": self.gamma_table.to_dict("records"), "delta_gamma": self.delta_gamma,
                "diagnostics": self.diagnostics, "loo": self.loo,
                "likelihoods": self.likelihoods, "timings": self.timings,
                "sampler": self.sampler, "target_accept": self.target_accept,
                "hierarchical": self.hierarchical}

    # -- the GammaFit interface (cram.fitting.results) -----------------------------------------
    @property
    def fitted(self) -> pd.DataFrame:
        """The tidy data actually fitted (derived curves dropped, rules applied)."""
        return self.curves

    def to_frame(self) -> pd.DataFrame:
        """The tidy ``az.summary`` frame."""
        return self.summary

    def predict(self, curve: str, t) -> np.ndarray | None:
        """The form at posterior-mean parameters of ``curve`` (None if one is not sampled)."""
        fm = get_form(self.form)
        post = self.idata.posterior
        p = {k: float(post[k].sel(curve=curve).mean()) for k in fm.params if k in post}
        return fm(t, **p) if len(p) == len(fm.params) else None

    def tables(self) -> dict[str, pd.DataFrame]:
        """Predictive checks and prior sensitivity, where computed."""
        named = {"ppc": self.ppc, "prior_predictive": self.prior_pc,
                 "prior_sensitivity": self.prior_sensitivity}
        return {k: v for k, v in named.items() if v is not None}


def _ci(x: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(x, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def diagnose(idata, var_names: list[str]) -> dict:
    """R-hat, bulk/tail ESS and divergences, with loud warnings when out of bounds."""
    import arviz as az

    s = az.summary(idata, var_names=var_names, kind="diagnostics")
    div = int(idata.sample_stats["diverging"].values.sum()) if "diverging" in idata.sample_stats \
        else 0
    n_draws = int(idata.posterior.sizes["chain"] * idata.posterior.sizes["draw"])
    out = {"r_hat_max": float(s["r_hat"].max()), "ess_bulk_min": float(s["ess_bulk"].min()),
           "ess_tail_min": float(s["ess_tail"].min()), "divergences": div,
           "chains": int(idata.posterior.sizes["chain"]),
           "draws": int(idata.posterior.sizes["draw"]), "total_draws": n_draws,
           "r_hat_threshold": RHAT_MAX, "ess_threshold": ESS_MIN}
    warn = []
    if s["r_hat"].isna().all():
        warn.append("R-hat undefined (it needs >= 2 chains): convergence is unchecked")
    elif not out["r_hat_max"] <= RHAT_MAX:
        worst = s["r_hat"].idxmax()
        warn.append(f"R-hat {out['r_hat_max']:.3f} > {RHAT_MAX} (worst: {worst}): chains disagree")
    if s["ess_bulk"].isna().all():
        warn.append("bulk ESS undefined")
    elif not out["ess_bulk_min"] >= ESS_MIN:
        worst = s["ess_bulk"].idxmin()
        warn.append(f"bulk ESS {out['ess_bulk_min']:.0f} < {ESS_MIN} (worst: {worst})")
    if div > 0:
        warn.append(f"{div} divergent transition(s) out of {n_draws}: the posterior may be biased")
    out["warnings"] = warn
    out["ok"] = not warn
    return out


def rope_statement(delta: np.ndarray, rope: float, level: float) -> dict:
    """Posterior summary of Δγ against the ROPE [−rope, rope]."""
    lo, hi = _ci(delta, level)
    p_in = float(np.mean(np.abs(delta) < rope))
    if lo > -rope and hi < rope:
        verdict = "equivalent"
        text = (f"the {level:.0%} interval [{lo:.3f}, {hi:.3f}] lies inside the ROPE ±{rope}: "
                "γ_model and γ_human are practically equivalent")
    elif hi < -rope or lo > rope:
        verdict = "different"
        text = (f"the {level:.0%} interval [{lo:.3f}, {hi:.3f}] lies outside the ROPE ±{rope}: "
                "γ_model and γ_human differ")
    else:
        verdict = "undecided"
        text = (f"the {level:.0%} interval [{lo:.3f}, {hi:.3f}] overlaps the ROPE ±{rope}: "
                "undecided")
    return {"mean": float(np.mean(delta)), "sd": float(np.std(delta)), "low": lo, "high": hi,
            "interval": level, "rope": rope, "p_in_rope": p_in,
            "p_positive": float(np.mean(delta > 0)), "verdict": verdict, "statement": text}


def _combine_loglik(idata) -> None:
    """Put every observed variable's pointwise log-likelihood into one ``obs`` variable."""
    import xarray as xr

    ll = idata.log_likelihood
    parts = [ll[v].rename({ll[v].dims[-1]: "obs_id"}) for v in OBS_VARS if v in ll]
    if len(parts) > 1 or (parts and "obs" not in ll):
        labels = np.concatenate([ll[v][ll[v].dims[-1]].values for v in OBS_VARS if v in ll])
        comb = xr.concat(parts, dim="obs_id").assign_coords(obs_id=labels)
        idata.log_likelihood["obs"] = comb


def ppc_table(idata, md: ModelData, level: float = 0.9,
              group: str = "posterior_predictive") -> pd.DataFrame:
    """Per point: observed value, predictive mean and interval (as proportions).

    ``group="prior_predictive"`` gives the prior predictive check of the same points.
    """
    d = md.data.reset_index(drop=True)
    out = d[["curve", "group", "delay_value", "t", "value"]].copy()
    out["pp_mean"] = np.nan
    out["pp_low"] = np.nan
    out["pp_high"] = np.nan
    pp = idata[group]
    n = d["n"].to_numpy(float)
    for v in OBS_VARS:
        if v not in pp:
            continue
        dim = pp[v].dims[-1]
        labels = list(pp[v][dim].values)
        arr = pp[v].values.reshape(-1, len(labels)).astype(float)  # (draws, obs)
        pos = [md.obs_labels.index(lab) for lab in labels]
        if v == "obs_binomial":
            arr = arr / n[pos][None, :]
        out.loc[pos, "pp_mean"] = arr.mean(0)
        lo, hi = np.quantile(arr, [(1 - level) / 2, 1 - (1 - level) / 2], axis=0)
        out.loc[pos, "pp_low"] = lo
        out.loc[pos, "pp_high"] = hi
    out["inside"] = (out["value"] >= out["pp_low"]) & (out["value"] <= out["pp_high"])
    return out


def fit_bayes(df: pd.DataFrame, rules: ComparisonRules | None = None, *, likelihood: str = "auto",
              hierarchical: bool | None = None, draws: int = 1000, tune: int = 1000,
              chains: int = 2, sampler: str = DEFAULT_SAMPLER, seed: int = 0,
              progress: bool = True, prior_predictive: bool = True,
              posterior_predictive: bool = True, loo: bool = True,
              prior_sensitivity: bool = True,
              target_accept: float | None = None) -> BayesFitResult:
    """Fit one or many curves with PyMC and return a :class:`BayesFitResult`.

    Parameters
    ----------
    df : DataFrame
        Tidy curves (human and/or model). Derived curves are dropped (pooled fit).
    rules : ComparisonRules
        Form, window, offset, ROPE and interval level, fixed before the fit.
    hierarchical : bool, optional
        Default: True when there is more than one curve.
    sampler : {"pymc", "nutpie"}
        PyMC's own NUTS (default: fastest to the ESS bar here) or nutpie.
    seed : int
        Seeds the sampler and the predictive draws.
    target_accept : float, optional
        NUTS target acceptance in (0, 1); default :data:`TARGET_ACCEPT` (0.99 hierarchical,
        0.9 per curve).
    """
    rules = rules or ComparisonRules()
    if target_accept is not None and not 0 < target_accept < 1:
        raise ConfigError(f"target_accept={target_accept}: must be in (0, 1)")
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r}; choose one of {list(SAMPLERS)}")
    fm = get_form(rules.form)
    md = prepare(df, rules, likelihood)
    if hierarchical is None:
        hierarchical = len(md.curves) > 1
    if target_accept is None:
        target_accept = TARGET_ACCEPT["hierarchical" if hierarchical else "per_curve"]
    t0 = time.perf_counter()
    model = build_model(md, fm, hierarchical)
    seeds = [int(s) for s in np.random.default_rng(seed).integers(0, 2**31 - 1, size=4)]
    steps = _Steps(prior_predictive, posterior_predictive, loo or prior_sensitivity,
                   prior_sensitivity)
    idata, timings = _sample(model, seeds, steps, draws=draws, tune=tune, chains=chains,
                             progressbar=progress, target_accept=target_accept, sampler=sampler)
    var_names = _summary_vars(idata, fm)
    diag = diagnose(idata, var_names)
    warn = list(diag["warnings"])
    loo_doc = _loo(idata, warn) if loo else None
    sens = _prior_sensitivity(idata, warn) if prior_sensitivity else None
    diag["warnings"] = warn
    diag["ok"] = not [w for w in warn if "R-hat" in w or "ESS" in w or "divergent" in w]
    post = idata.posterior
    delta = None
    if "delta_gamma" in post:
        delta = rope_statement(post["delta_gamma"].values.ravel(), rules.rope, rules.interval)
    ppc = ppc_table(idata, md, rules.interval) if posterior_predictive else None
    prior_pc = (ppc_table(idata, md, rules.interval, group="prior_predictive")
                if prior_predictive else None)
    timings["total_s"] = time.perf_counter() - t0
    return BayesFitResult(idata=idata, summary=_summary_frame(idata, var_names, rules.interval),
                          curves=md.data, form=fm.name, rules=rules.to_dict(),
                          likelihoods=md.lik, hierarchical=hierarchical, sampler=sampler,
                          seed=seed, diagnostics=diag,
                          gamma_table=pd.DataFrame(_gamma_rows(post, md, rules.interval)),
                          delta_gamma=delta, timings=timings, loo=loo_doc, ppc=ppc,
                          prior_pc=prior_pc, prior_sensitivity=sens, warnings=warn,
                          target_accept=target_accept)


@dataclass(frozen=True)
class _Steps:
    """Which draws and terms :func:`_sample` adds after sampling the posterior."""

    prior_predictive: bool
    posterior_predictive: bool
    log_likelihood: bool
    log_prior: bool


def _sample(model, seeds: list[int], steps: _Steps, *, sampler: str, chains: int,
            **kw) -> tuple[object, dict]:
    """Posterior draws plus the requested predictive draws and pointwise terms, with timings."""
    from cram.fitting.mle import one_blas_thread

    pm = _pm()
    timings = {}
    t0 = time.perf_counter()
    with model, warnings.catch_warnings(), one_blas_thread():
        warnings.filterwarnings("ignore", category=FutureWarning)
        kw = dict(draws=kw.pop("draws"), tune=kw.pop("tune"), chains=chains,
                  random_seed=seeds[0], **kw)
        if sampler == "nutpie":
            idata = pm.sample(nuts_sampler="nutpie", cores=min(chains, 2), **kw)
        else:
            idata = pm.sample(cores=min(chains, 2), compute_convergence_checks=False, **kw)
        timings["sample_s"] = time.perf_counter() - t0
        if steps.prior_predictive:
            t1 = time.perf_counter()
            idata.extend(pm.sample_prior_predictive(draws=500, random_seed=seeds[1]))
            timings["prior_predictive_s"] = time.perf_counter() - t1
        if steps.posterior_predictive:
            t1 = time.perf_counter()
            pm.sample_posterior_predictive(idata, extend_inferencedata=True,
                                           random_seed=seeds[2], progressbar=False)
            timings["posterior_predictive_s"] = time.perf_counter() - t1
        if steps.log_likelihood:
            t1 = time.perf_counter()
            pm.compute_log_likelihood(idata, progressbar=False)
            _combine_loglik(idata)
            timings["log_likelihood_s"] = time.perf_counter() - t1
        if steps.log_prior:
            pm.compute_log_prior(idata, progressbar=False)
    return idata, timings


def _summary_vars(idata, fm: Form) -> list[str]:
    """Posterior variables to summarise and diagnose: γ-level first, then the form's others."""
    var_names = [v for v in ("mu_gamma", "sigma_log_gamma", "delta_gamma", "gamma")
                 if v in idata.posterior]
    var_names += [p for p in (*fm.params, "a_first") if p != "gamma" and p in idata.posterior]
    return var_names or list(idata.posterior.data_vars)


def _summary_frame(idata, var_names: list[str], interval: float) -> pd.DataFrame:
    """``az.summary`` as a tidy frame: variable, param, coord, then ArviZ's columns."""
    import arviz as az

    summary = az.summary(idata, var_names=var_names, hdi_prob=interval)
    summary = summary.reset_index().rename(columns={"index": "variable"})
    summary.insert(1, "param", summary["variable"].str.replace(r"\[.*\]$", "", regex=True))
    summary.insert(2, "coord", summary["variable"].str.extract(r"\[(.*)\]$")[0])
    return summary


def _gamma_rows(post, md: ModelData, interval: float) -> list[dict]:
    """γ per curve (posterior mean, equal-tailed interval, sd), then per group if hierarchical."""
    rows = []
    for i, c in enumerate(md.curves):
        row = {"curve": c, "group": md.groups[i], "likelihood": md.lik[c],
               "n_points": int((md.data["curve"] == c).sum())}
        if "gamma" in post:
            g = post["gamma"].sel(curve=c).values.ravel()
            lo, hi = _ci(g, interval)
            row.update(gamma=float(g.mean()), gamma_low=lo, gamma_high=hi, gamma_sd=float(g.std()))
        else:
            row.update(gamma=None, gamma_low=None, gamma_high=None, gamma_sd=None)
        rows.append(row)
    if "mu_gamma" in post:
        for g in md.group_names:
            x = post["mu_gamma"].sel(group=g).values.ravel()
            lo, hi = _ci(x, interval)
            rows.append({"curve": f"group:{g}", "group": g, "likelihood": "",
                         "n_points": int(sum(md.data["group"] == g)),
                         "gamma": float(x.mean()), "gamma_low": lo, "gamma_high": hi,
                         "gamma_sd": float(x.std())})
    return rows


def _loo(idata, warn: list[str]) -> dict:
    """PSIS-LOO of the pointwise likelihood; appends a warning for Pareto k > 0.7."""
    import arviz as az

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        lo_res = az.loo(idata, var_name="obs", pointwise=True)
    k = np.asarray(lo_res.pareto_k)
    if (k > 0.7).any():
        warn.append(f"LOO: {(k > 0.7).sum()} point(s) with Pareto k > 0.7; "
                    "elpd_loo is unreliable there")
    return {"elpd_loo": float(lo_res.elpd_loo), "se": float(lo_res.se),
            "p_loo": float(lo_res.p_loo), "pareto_k_max": float(k.max()),
            "n_pareto_k_gt_0.7": int((k > 0.7).sum())}


def _prior_sensitivity(idata, warn: list[str]) -> pd.DataFrame | None:
    """Prior sensitivity of the γ-level quantities; appends a warning for flagged ones."""
    post = idata.posterior
    sens = prior_sensitivity_table(idata, [v for v in ("mu_gamma", "delta_gamma", "gamma")
                                           if v in post])
    flagged = sens[sens["flag"]] if sens is not None else []
    if len(flagged):
        warn.append(f"prior sensitivity: {len(flagged)} quantity(ies) with power-scaling "
                    f"sensitivity > 0.05 ({', '.join(flagged['variable'].head(4))})")
    return sens


def prior_sensitivity_table(idata, var_names: list[str]) -> pd.DataFrame | None:
    """Power-scaling prior sensitivity (ArviZ ``psens``); > 0.05 flags a prior-driven quantity."""
    import arviz as az

    if not var_names or "log_prior" not in idata.groups():
        return None
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for comp in ("prior", "likelihood"):
            for v in var_names:
                s = az.psens(idata, component=comp, var_names=[v])
                da = s[v] if hasattr(s, "data_vars") else s
                if da.ndim == 0:
                    rows.append({"variable": v, "component": comp, "sensitivity": float(da)})
                else:
                    dim = da.dims[0]
                    for c in da[dim].values:
                        rows.append({"variable": f"{v}[{c}]", "component": comp,
                                     "sensitivity": float(da.sel({dim: c}))})
    df = pd.DataFrame(rows)
    df["flag"] = (df["component"] == "prior") & (df["sensitivity"] > 0.05)
    return df


def compare_forms(df: pd.DataFrame, forms: list[str], rules: ComparisonRules, *,
                  fits: dict | None = None, **kw):
    """Fit each form under the same rules and compare them with LOO (``az.compare``).

    ``fits`` may hold fits already made of the same points under the same rules (form ->
    :class:`BayesFitResult`, with pointwise log-likelihood); they are used, not refitted.
    Returns ``(comparison DataFrame, {form: BayesFitResult})``.
    """
    from dataclasses import replace

    import arviz as az

    made = {f: r for f, r in (fits or {}).items() if isinstance(r, BayesFitResult)}
    fits = {}
    for f in forms:
        fits[f] = made.get(f) or fit_bayes(df, replace(rules, form=f), loo=True, **kw)
    cmp = az.compare({f: r.idata for f, r in fits.items()}, var_name="obs")
    cmp = cmp.reset_index().rename(columns={"index": "form"})
    return cmp, fits
