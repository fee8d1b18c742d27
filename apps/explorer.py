"""CRAM explorer: runs, human forgetting data, model-human γ comparison and the paper's claims.

Start it with ``cram app`` (Streamlit on 127.0.0.1). The app only reads: run folders written by
``cram train`` (docs/run_folder.md), fit folders written by ``cram fit gamma --out`` (through
:mod:`cram.core.fits`, the one reader), a human curve CSV the user uploads (checked by
:func:`cram.psych_data.load_curves_csv`) and the claims registry ``claims/registry.toml`` (from
which docs/claims.md is rendered). Live work is limited to quick MLE fits; the app never runs
PyMC: a Bayesian fit asked for behind a button is ``cram fit gamma`` in a subprocess, writing a
new fit folder that is then read like any other.

Layout: :func:`main` plus one ``*_page`` function per page; ``*_ui`` functions draw widgets and
return the selection. Every widget's value is mirrored into ``st.query_params`` (the widget key is
the parameter name), so a view can be shared as a link. Loaders are wrapped in ``st.cache_data``
and keyed on the files' sizes and modification times.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from cram.apps import data as D

PAGES = ("Runs", "Human data", "Compare", "Claims")
LIST_SEP = ","  # lists travel in one query parameter, comma-separated ("" = empty list)


# ============================================================================================
# query-parameter state


def _qp_init(key: str, default, *, options=None, multi: bool = False, cast=str) -> None:
    """Seed ``st.session_state[key]`` from the query parameter ``key`` (once per widget life).

    Values that are not among ``options`` (a run that was deleted, a typo in a link) are dropped
    and fall back to ``default``.
    """
    if key in st.session_state:
        return
    raw = st.query_params.get(key)
    value = default
    if raw is not None:
        try:
            if multi:
                value = [cast(v) for v in raw.split(LIST_SEP) if v != ""]
                if options is not None:
                    value = [v for v in value if v in options]
            elif cast is bool:
                value = raw.lower() in ("1", "true", "yes", "on")
            elif cast is tuple:
                lo, hi = (float(x) for x in raw.split(LIST_SEP))
                value = (lo, hi)
            else:
                value = cast(raw)
                if options is not None and value not in options:
                    value = default
        except (TypeError, ValueError):
            value = default
    st.session_state[key] = value


def _qp_sync(*keys: str) -> None:
    """Write the current values of widget ``keys`` into the URL's query parameters."""
    for key in keys:
        if key not in st.session_state:
            continue
        v = st.session_state[key]
        if isinstance(v, (list, tuple)):
            text = LIST_SEP.join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
        elif isinstance(v, bool):
            text = "1" if v else "0"
        elif isinstance(v, float):
            text = f"{v:g}"
        else:
            text = str(v)
        if st.query_params.get(key) != text:
            st.query_params[key] = text


# ============================================================================================
# cached loaders (keyed on file signatures, so rewritten files are read again)


def _runs_signature(root: str) -> tuple:
    return tuple((str(d), D.folder_signature(d)) for d in D._candidate_run_dirs(Path(root)))


@st.cache_data(show_spinner="Reading run folders…", max_entries=8)
def load_runs(root: str, signature: tuple) -> D.RunScan:
    """All runs below ``root`` (``signature`` only keys the cache)."""
    return D.scan_runs(root)


@st.cache_data(show_spinner="Reading fit folder…", max_entries=32)
def load_fit(path: str, signature: tuple) -> tuple[D.FitFolder | None, str | None]:
    """A fit folder (its posterior not read yet), or ``(None, message)`` when it cannot be read."""
    try:
        return D.load_fit_folder(path), None
    except Exception as err:  # noqa: BLE001 - shown to the user, never a traceback
        return None, str(err)


@st.cache_data(show_spinner="Reading the posterior…", max_entries=16)
def load_draws(path: str, signature: tuple) -> tuple[dict, list[str]]:
    """A fit folder's scalar posterior draws (read by ArviZ) and the problems met reading them."""
    try:
        fit = D.load_fit_folder(path)
    except Exception as err:  # noqa: BLE001
        return {}, [str(err)]
    before = len(fit.warnings)
    draws = fit.draws
    return draws, fit.warnings[before:]


@st.cache_data(show_spinner="Checking your CSV…", max_entries=16)
def check_user_csv(name: str, data: bytes) -> tuple[pd.DataFrame | None, str | None]:
    """An uploaded curve CSV checked as ``cram data check`` checks it: ``(curves, error)``."""
    return D.load_user_csv(name, data)


@st.cache_data(show_spinner="Loading human datasets…")
def load_human() -> tuple[pd.DataFrame, pd.DataFrame, dict, str | None]:
    """``(listing, tidy table of all curves, name -> schema entry, error message)``."""
    try:
        from cram import psych_data

        listing = psych_data.list_datasets()
        frames, infos = [], {}
        for name in listing["name"]:
            frames.append(psych_data.load_dataset(name))
            infos[name] = psych_data.dataset_info(name)
        tidy = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return listing, tidy, infos, None
    except Exception as err:  # noqa: BLE001
        return pd.DataFrame(), pd.DataFrame(), {}, f"{type(err).__name__}: {err}"


@st.cache_data(show_spinner="Reading the claims registry…")
def load_claims(path: str, signature: tuple) -> tuple[pd.DataFrame | None, str | None]:
    """The claims registry as a table (cached on the file's signature), or the error message."""
    try:
        return D.load_claims(path), None
    except Exception as err:  # noqa: BLE001
        return None, str(err)


def _fitting():
    """The fitting package, or ``None`` with a message if its point fits are not available."""
    try:
        from cram import fitting
    except Exception as err:  # noqa: BLE001
        return None, f"cram.fitting cannot be imported ({type(err).__name__}: {err})"
    missing = [n for n in ("fit_mle", "FORMS") if not hasattr(fitting, n)]
    if missing:
        return None, f"cram.fitting lacks {missing} in this install"
    return fitting, None


@st.cache_data(show_spinner="Fitting (MLE)…", max_entries=256)
def mle_fit(curve: pd.DataFrame, form: str, window: tuple | None, offset: float | None
            ) -> tuple[dict | None, pd.DataFrame | None, str | None]:
    """Point fit of one curve: ``(row for the table, fitted line, error message)``."""
    fitting, why = _fitting()
    if fitting is None:
        return None, None, why
    try:
        res = fitting.fit_mle(curve, form=form, window=window, offset=offset, n_starts=3)
    except Exception as err:  # noqa: BLE001 - bad windows, too few points, failed optimiser
        return None, None, str(err)
    first = curve.iloc[0]
    row = {"curve": str(first["curve"]), "group": str(first["group"]),
           "dataset": str(first.get("dataset", "")), "measure": str(first["measure"]),
           "unit": str(first["delay_unit"])}
    params = dict(res.params)
    row.update({k: float(v) for k, v in params.items() if _is_number(v)})
    try:
        ci = res.conf_int(alpha=0.1)  # the 90% confidence interval (MLE): a Wald interval
        if "gamma" in params and ci is not None and "gamma" in getattr(ci, "index", []):
            lo, hi = ci.loc["gamma"].iloc[0], ci.loc["gamma"].iloc[1]
            row["gamma low"], row["gamma high"] = float(lo), float(hi)
            row["gamma se"] = float(res.stderr.get("gamma", np.nan))
    except Exception:  # noqa: BLE001, S110 - intervals are optional in the table
        pass
    for k in ("loglik", "aic", "bic"):
        v = getattr(res, k, None)
        if _is_number(v):
            row[k] = float(v)
    t = curve["delay_value"].to_numpy(dtype=float) + (offset or 0.0)
    tpos = t[t > 0]
    if len(tpos):
        grid = np.geomspace(tpos.min(), t.max(), 60)
        try:
            pred = np.asarray(res.predict(grid), dtype=float)
            line = pd.DataFrame({"t": grid, "pred": pred})
        except Exception:  # noqa: BLE001
            line = None
    else:
        line = None
    return row, line, None


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.floating, np.integer)) and np.isfinite(float(v))


# ============================================================================================
# sidebar and navigation


def sidebar_ui() -> tuple[str, Path, Path]:
    """Page choice and the folders to read; returns ``(page, runs_root, fits_root)``."""
    st.sidebar.title("CRAM explorer")
    _qp_init("page", PAGES[0], options=PAGES)
    page = st.sidebar.radio("Page", PAGES, key="page")
    runs_root, fits_root = D.app_roots()  # from the command line only, never from the URL
    for stale in ("runs", "fits"):  # links made before: the parameters are dropped, not obeyed
        if stale in st.query_params:
            del st.query_params[stale]
    st.sidebar.caption(f"Runs: `{runs_root}`  \nFits: `{fits_root}`  \n"
                       "(set with `cram app --runs DIR --fits DIR`)")
    _qp_sync("page")
    st.sidebar.caption("The URL holds this view: copy it to share it.")
    return page, runs_root, fits_root


def _show_scan_messages(scan: D.RunScan) -> None:
    for label, msg in scan.errors.items():
        st.error(f"Run **{label}** cannot be shown: {msg}")
    if scan.warnings:
        lines = [f"- **{lab}**: {w}" for lab, ws in scan.warnings.items() for w in ws]
        with st.expander(f"{len(lines)} note(s) about partial run folders"):
            st.markdown("\n".join(lines))


def _no_runs_message(root: Path) -> None:
    if not root.exists():
        st.warning(f"The runs folder `{root}` does not exist.")
    else:
        st.warning(f"No run folders (config.json + metrics.csv) below `{root}`.")
    st.info("Write an example run with `make demo` (to `runs/demo/`), train one with "
            "`cram train ... --out runs/NAME`, or start the app on another folder with "
            "`cram app --runs DIR`.")


# ============================================================================================
# Runs page


def runs_ui(scan: D.RunScan) -> tuple[list[str], str, bool, str]:
    """Run selection; returns ``(runs, series, log_y, focus_run)``."""
    labels = list(scan.runs)
    _qp_init("run", labels[:12], options=labels, multi=True)
    chosen = st.multiselect("Runs (one line per run and seed)", labels, key="run")
    c1, c2, c3 = st.columns([2, 1, 2])
    series_opts = [s for s in D.ATTENTION_SERIES
                   if any(s in r.metrics.columns for r in scan.runs.values())]
    _qp_init("series", "attention_fraction" if "attention_fraction" in series_opts
             else (series_opts[0] if series_opts else ""), options=series_opts)
    series = c1.selectbox("Attention series", series_opts, key="series")
    _qp_init("logy", False, cast=bool)
    log_y = c2.checkbox("log y", key="logy")
    focus_opts = chosen or labels
    _qp_init("focus", focus_opts[0], options=focus_opts)
    if st.session_state.get("focus") not in focus_opts:
        st.session_state["focus"] = focus_opts[0]
    focus = c3.selectbox("Run for the per-layer and per-pattern views", focus_opts, key="focus")
    _qp_sync("run", "series", "logy", "focus")
    return chosen, series, log_y, focus


def runs_page(runs_root: Path, fits_root: Path | None = None) -> None:
    """The Runs page: attention, tiers, patterns, library/novel, retention, forgetting."""
    st.header("Runs")
    scan = load_runs(str(runs_root), _runs_signature(str(runs_root)))
    _show_scan_messages(scan)
    if not scan.runs:
        _no_runs_message(runs_root)
        return
    chosen, series, log_y, focus = runs_ui(scan)
    runs = {k: scan.runs[k] for k in chosen}
    if not runs:
        st.info("Choose at least one run.")
        return
    _attention_section(runs, series, log_y)
    run = scan.runs[focus]
    _tiers_section(run, focus)
    _layers_section(run, focus)
    _patterns_section(run, focus)
    _library_section(runs)
    _reliance_section(runs)
    _retention_section(run, focus)
    _forgetting_section(run, focus, fits_root or runs_root)


def _attention_section(runs: dict, series: str, log_y: bool) -> None:
    st.subheader("Attention fraction against step")
    df = D.attention_long(runs, [series])
    trans = D.transitions(runs)
    if df.empty:
        st.warning(f"None of the chosen runs logs `{series}`.")
    else:
        yscale = alt.Scale(type="log") if log_y else alt.Scale(domain=[0, 1])
        if log_y:
            df = df[df["value"] > 0]
        lines = alt.Chart(df).mark_line(point=alt.OverlayMarkDef(size=12)).encode(
            x=alt.X("step:Q", title="optimiser step"),
            y=alt.Y("value:Q", title=series, scale=yscale),
            color=alt.Color("run:N", title="run"),
            tooltip=["run", "model", "seed", "step", alt.Tooltip("value:Q", format=".4f")])
        layers = [lines]
        if not trans.empty:
            trans_sel = trans[trans["run"].isin(runs)]
            layers.append(alt.Chart(trans_sel).mark_rect(opacity=0.12).encode(
                x="low:Q", x2="high:Q", color=alt.Color("run:N")))
            layers.append(alt.Chart(trans_sel).mark_rule(strokeDash=[5, 3]).encode(
                x="step:Q", color=alt.Color("run:N"),
                tooltip=["run", "step", "low", "high", "method"]))
        st.altair_chart(alt.layer(*layers).interactive(), width="stretch")
        if trans.empty:
            st.caption("No phase transition recorded (transition.json missing or step null).")
        else:
            st.caption("Dashed line: change-point step of the phase transition (series "
                       f"`{trans['series'].iloc[0]}`); band: its bootstrap interval. "
                       "familiarity_rise: change point of q̂(library) − q̂(novel); a transition "
                       "that follows familiarity comes after it.")
            st.dataframe(trans, hide_index=True, width="stretch")


def _tiers_section(run, focus: str) -> None:
    st.subheader(f"Share of each tier per layer: {focus}")
    tiers = D.tier_shares(run)
    if tiers.empty:
        st.info(f"{focus} logs no per-layer tier shares (a model without tiers).")
    else:
        chart = alt.Chart(tiers).mark_area().encode(
            x=alt.X("step:Q"), y=alt.Y("share:Q", stack="normalize", title="share of tokens"),
            color=alt.Color("tier:N", scale=alt.Scale(domain=["working", "episodic", "semantic"])),
            tooltip=["layer", "step", "tier", alt.Tooltip("share:Q", format=".3f")],
        ).properties(height=180).facet(row=alt.Row("layer:O", title="layer"))
        st.altair_chart(chart, width="stretch")


def _layers_section(run, focus: str) -> None:
    """Per-layer attention, q and q̂ on library / novel / non-query tokens, and both units."""
    st.subheader(f"Per layer: library, novel and non-query tokens: {focus}")
    view = D.layer_view(run)
    if view.empty:
        st.info(f"{focus} logs no per-layer columns (a run written before issue 13, or a model "
                "without tiers).")
        return
    chart = alt.Chart(view).mark_line(point=alt.OverlayMarkDef(size=10)).encode(
        x=alt.X("step:Q"), y=alt.Y("value:Q", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("tokens:N", scale=alt.Scale(domain=["library", "novel", "nonquery"])),
        strokeDash=alt.StrokeDash("layer:N", title="layer"),
        tooltip=["layer", "measure", "tokens", "step", alt.Tooltip("value:Q", format=".4f")],
    ).properties(height=180, width=220).facet(column=alt.Column("measure:N", title=None))
    st.altair_chart(chart)
    last = view[view["step"] == view["step"].max()]
    table = last.pivot_table(index="layer", columns=["measure", "tokens"], values="value")
    table.columns = [f"{m} {t}" for m, t in table.columns]
    st.caption(f"Step {int(view['step'].max())}, per layer (attention: share of those tokens "
               "that read episodic memory in that layer).")
    st.dataframe(table.reset_index(), hide_index=True, width="stretch")
    units = D.unit_table(run)
    if not units.empty:
        st.caption("Attention fractions in both units at the same step: per (token, layer) pair, "
                   "and per token (a token attends if any layer reads episodic memory for it).")
        st.dataframe(units, hide_index=True, width="stretch")


def _patterns_section(run, focus: str) -> None:
    st.subheader(f"Per-pattern consolidation: {focus}")
    if run.patterns is None or run.patterns.empty:
        st.info(f"{focus} has no patterns.csv.")
    else:
        popts = [c for c in ("episodic_share", "accuracy", "q", "qhat")
                 if c in run.patterns.columns]
        _qp_init("pvalue", popts[0] if popts else "", options=popts)
        pval = st.selectbox("Heatmap value", popts, key="pvalue")
        _qp_sync("pvalue")
        heat = alt.Chart(run.patterns).mark_rect().encode(
            x=alt.X("step:O", title="step"), y=alt.Y("pattern:O", title="library pattern"),
            color=alt.Color(f"{pval}:Q", scale=alt.Scale(scheme="viridis", domain=[0, 1])),
            tooltip=["pattern", "step", "exposures", alt.Tooltip(f"{pval}:Q", format=".3f")])
        st.altair_chart(heat, width="stretch")


def _library_section(runs: dict) -> None:
    st.subheader("Library against novel queries")
    lib = D.attention_long(runs, ["attention_library", "attention_novel",
                                  "retrieval_acc_library", "retrieval_acc_novel"])
    if lib.empty:
        st.info("The chosen runs log no library/novel query metrics.")
    else:
        lib["kind"] = np.where(lib["series"].str.startswith("attention"), "attention",
                               "retrieval accuracy")
        lib["queries"] = np.where(lib["series"].str.endswith("library"), "library", "novel")
        chart = alt.Chart(lib).mark_line().encode(
            x="step:Q", y=alt.Y("value:Q", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("queries:N"), detail="run:N", strokeDash="run:N",
            tooltip=["run", "series", "step", alt.Tooltip("value:Q", format=".3f")],
        ).properties(height=220).facet(column=alt.Column("kind:N", title=None))
        st.altair_chart(chart)


def _reliance_section(runs: dict) -> None:
    """Accuracy with the semantic output zeroed and with working memory only (issue 28)."""
    st.subheader("Is the logged reliance real? Accuracy with a tier removed")
    long = D.attention_long(runs, [c for pair in D.RELIANCE_CHECK.values() for c, _ in pair])
    if long.empty:
        st.info("The chosen runs log no causal check (a model without a semantic tier, or a "
                "run written before these columns).")
        return
    names = {c: (queries, condition) for queries, pair in D.RELIANCE_CHECK.items()
             for c, condition in pair}
    long["queries"] = long["series"].map(lambda c: names[c][0])
    long["condition"] = long["series"].map(lambda c: names[c][1])
    chart = alt.Chart(long).mark_line().encode(
        x="step:Q", y=alt.Y("value:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("condition:N"), detail="run:N", strokeDash="run:N",
        tooltip=["run", "condition", "step", alt.Tooltip("value:Q", format=".3f")],
    ).properties(height=220).facet(column=alt.Column("queries:N", title=None))
    st.altair_chart(chart)
    st.caption("If the semantic tier answers the library, zeroing its output (the router's "
               "choices kept) drops library accuracy to chance; if attention or the readout "
               "answers, nothing changes. Working memory only: no retrieval at all.")


def _retention_section(run, focus: str) -> None:
    if run.retention is not None and not run.retention.empty:
        with st.expander(f"Retention against lag: {focus}"):
            ret = run.retention.copy()
            ret = ret[ret["lag"] >= 0]
            ret["lag+1"] = ret["lag"] + 1
            chart = alt.Chart(ret).mark_line(point=True).encode(
                x=alt.X("lag+1:Q", scale=alt.Scale(type="log"), title="lag + 1 (items)"),
                y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1])),
                color="condition:N", strokeDash="binding:N",
                tooltip=["step", "condition", "binding", "lag", "n", "accuracy"],
            ).properties(height=220).facet(column=alt.Column("step:O"))
            st.altair_chart(chart)


def _forgetting_section(run, focus: str, fits_root: Path) -> None:
    """Cued recall of retired bindings against delay beside people's (study protocol, issue 29).

    Only for a run with forgetting.csv; the verdict comes from a fit folder of that run's
    forgetting curve, never from a fit made here.
    """
    curves = D.forgetting_long(run)
    if curves.empty:
        return
    st.subheader(f"Forgetting over a delay: {focus}")
    st.caption("Study protocol (docs/forgetting.md): library bindings studied, retired, then "
               "queried with their store removed (cued recall from the weights). Left: "
               "proportion correct of the retired bindings at the last test against the delay "
               "since their last exposure, in training sequences, for each tier ablation "
               "(massed and spaced together); the dotted line is the held-out bindings, never "
               f"shown: chance. Right: people's cued recall ({D.FORGETTING_HUMAN}: Rubin, Hinton "
               "& Wenzel 1999) against intervening items + 1. The units are not commensurable: "
               "compare shapes (slopes on log axes), not positions.")
    tiers = D.forgetting_tiers(run)
    left, right = st.columns(2)
    left.altair_chart(_forgetting_chart(curves[curves["schedule"] == "all"], tiers, "ablation"),
                      width="stretch")
    _, human, _, err = load_human()
    if err or human.empty:
        right.warning(f"The human curves cannot be shown: {err or 'no datasets'}")
    else:
        sub = human[human["dataset"] == D.FORGETTING_HUMAN].assign(
            lag1=lambda d: d["delay_value"] + 1)
        right.altair_chart(alt.Chart(sub).mark_line(point=True).encode(
            x=alt.X("lag1:Q", scale=alt.Scale(type="log"), title="intervening items + 1"),
            y=alt.Y("value:Q", title="proportion recalled (people)",
                    scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("curve:N"), strokeDash=alt.StrokeDash("derived:N"),
            tooltip=["curve", "delay_value", "value"]), width="stretch")
    spacing = curves[(curves["ablation"] == "none") & (curves["schedule"] != "all")]
    if not spacing.empty:
        st.caption("Massed against spaced study (the model's own routing): same exposures, "
                   "same last exposure.")
        st.altair_chart(_forgetting_chart(spacing, tiers, "schedule"), width="stretch")
    st.markdown(D.forgetting_tier_text(run))
    st.dataframe(tiers, hide_index=True, width="stretch")
    _forgetting_verdict(run, fits_root)


def _forgetting_chart(curves: pd.DataFrame, tiers: pd.DataFrame, colour: str):
    """Recall against delay in training sequences (log x), coloured by ``colour``, chance dotted."""
    lines = alt.Chart(curves).mark_line(point=True).encode(
        x=alt.X("delay_sequences:Q", scale=alt.Scale(type="log"),
                title="delay since last exposure (training sequences)"),
        y=alt.Y("accuracy:Q", title="proportion recalled (model)",
                scale=alt.Scale(domain=[0, 1])),
        color=alt.Color(f"{colour}:N"),
        tooltip=["ablation", "schedule", "delay_steps", "delay_sequences", "n",
                 alt.Tooltip("accuracy:Q", format=".3f")])
    chance = tiers.loc[tiers["ablation"] == "none", "held_out"].dropna()
    if chance.empty:
        return lines
    rule = alt.Chart(pd.DataFrame({"chance": [float(chance.iloc[0])]})).mark_rule(
        strokeDash=[2, 2], color="grey").encode(y="chance:Q", tooltip=["chance"])
    return lines + rule


def _forgetting_verdict(run, fits_root: Path) -> None:
    """The form check of the run's forgetting curve, from the newest fit folder that fitted it."""
    for path in D.find_fits(fits_root):
        fit, _ = load_fit(str(path), D.folder_signature(path))
        ids = D.forgetting_fit_curves(fit, run) if fit is not None else []
        if ids:
            lines = D.form_check_lines(fit, ids)
            st.markdown(f"**Form check** (fit `{D.run_label(path, fits_root)}`: "
                        f"{fit.describe()}); γ only where the power law passes:\n\n"
                        + "\n".join(f"- {line}" for line in lines))
            return
    st.info(f"No fit of this run's forgetting curve below `{fits_root}`: fit with `cram fit "
            "gamma --curve-kind forgetting`, e.g. "
            f"`{D.forgetting_fit_command(run.path)}`, to see the form check here.")

# ============================================================================================
# Human data page


def human_page() -> None:
    """The Human data page: the shipped forgetting curves."""
    st.header("Human forgetting data")
    listing, tidy, infos, err = load_human()
    if err:
        st.error(f"The human datasets cannot be loaded: {err}")
        return
    if listing.empty:
        st.info("No human datasets ship with this install.")
        return
    _qp_init("hlog", True, cast=bool)
    _qp_init("hderived", True, cast=bool)
    c1, c2 = st.columns(2)
    log_x = c1.checkbox("log delay axis", key="hlog")
    derived = c2.checkbox("show derived curves (e.g. a mean over conditions)", key="hderived")
    _qp_sync("hlog", "hderived")
    for _, row in listing.iterrows():
        name = row["name"]
        info = infos.get(name, {})
        sub = tidy[tidy["dataset"] == name] if "dataset" in tidy.columns else tidy.iloc[0:0]
        if not derived:
            sub = sub[~sub["derived"]]
        st.subheader(str(row.get("title", name)))
        st.caption(f"**Citation.** {row.get('citation', '')}")
        unit, measure = row.get("delay_unit", "?"), row.get("measure", "?")
        defn = info.get("measure_definition", "")
        st.markdown(
            f"Measure: **{measure}**{' (' + defn + ')' if defn else ''}. Delay unit: **{unit}**. "
            f"n = {row.get('n', '?')} {row.get('n_kind', '')}"
            + (f" ({info['n_note']})" if info.get("n_note") else "") + ". "
            f"Licence: {row.get('licence', '?')}")
        if sub.empty:
            st.info("No curves to show with these settings.")
            continue
        plot = sub.copy()
        plot["x"] = plot["delay_value"] + (1.0 if log_x and (plot["delay_value"] <= 0).any()
                                           else 0.0)
        xtitle = f"delay ({unit})" + (" + 1" if (plot["x"] != plot["delay_value"]).any() else "")
        chart = alt.Chart(plot).mark_line(point=True).encode(
            x=alt.X("x:Q", title=xtitle, scale=alt.Scale(type="log" if log_x else "linear")),
            y=alt.Y("value:Q", title=measure, scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("curve:N"), strokeDash=alt.StrokeDash("derived:N"),
            tooltip=["curve", "delay_value", "value", "n"])
        st.altair_chart(chart, width="stretch")
        with st.expander("Data"):
            st.dataframe(sub, hide_index=True, width="stretch")


# ============================================================================================
# Compare page


def measure_ui() -> str:
    """The kind of model curve to compare (a key of ``MODEL_MEASURES``)."""
    mopts = list(D.MODEL_MEASURES)
    _qp_init("mkind", mopts[0], options=mopts)
    kind = st.selectbox("Model curve", mopts, key="mkind",
                        help="; ".join(f"{k}: {v[1]}" for k, v in D.MODEL_MEASURES.items()))
    st.caption(f"`{kind}`: {D.MODEL_MEASURES[kind][1]}.")
    _qp_sync("mkind")
    return kind


def user_csv_ui() -> tuple[pd.DataFrame | None, dict[str, bytes]]:
    """The uploader of the user's own human curve CSV; returns its curves and its bytes.

    The file is checked as ``cram data check FILE`` checks it; a bad file is one line of error
    text. A newly uploaded file's curves are added to the chosen human curves.
    """
    up = st.file_uploader(
        "Your own human curve CSV", type=["csv"], key="hcsv",
        help="Columns delay_value, delay_unit, measure, value; optional n, n_kind, source, "
             "curve (one curve per value of curve, else per source). Checked as "
             "`cram data check FILE` checks it.")
    if up is None:
        st.session_state.pop("_hcsv_seen", None)
        return None, {}
    data = up.getvalue()
    df, err = check_user_csv(up.name, data)
    if err:
        st.error(f"Your CSV was not loaded: {err}")
        return None, {}
    ids = list(pd.unique(df["curve"]))
    seen = (up.name, len(data), hash(data))
    if st.session_state.get("_hcsv_seen") != seen:
        st.session_state["_hcsv_seen"] = seen
        st.session_state["_hcsv_new"] = ids
    st.caption(f"**{df['dataset'].iloc[0]}**: {len(ids)} curve(s) ({', '.join(ids)}), shown "
               "beside the shipped datasets and marked as yours in the chart and tables.")
    return df, {up.name: data}


def compare_ui(kind: str, model_ids: list[str], human_ids: list[str],
               default_human: list[str], forms: list[str], label_of: dict) -> dict:
    """Curves, form, offset, window and axes for the comparison; returns them as a dict."""
    c1, c2 = st.columns(2)
    _qp_init("mcurves", model_ids[:6], options=model_ids, multi=True)
    # another curve kind makes earlier ids invalid: keep the valid ones, else the default
    valid = [c for c in st.session_state["mcurves"] if c in model_ids]
    prev = st.session_state.get("_mkind_prev")
    if prev is not None and prev != kind and not valid:
        valid = model_ids[:6]
    st.session_state["mcurves"] = valid
    st.session_state["_mkind_prev"] = kind
    mcurves = c1.multiselect("Model curves", model_ids, key="mcurves")
    _qp_init("hcurves", default_human, options=human_ids, multi=True)
    # curves of a CSV that was removed are dropped; those of one just uploaded join the chosen
    # curves (and the Δγ pair)
    chosen = [c for c in st.session_state["hcurves"] if c in human_ids]
    new = [c for c in st.session_state.pop("_hcsv_new", None) or [] if c in human_ids]
    if new:
        chosen = list(dict.fromkeys(chosen + new))
        st.session_state["_dph_new"] = new[0]
    st.session_state["hcurves"] = chosen
    hcurves = c2.multiselect("Human curves", human_ids, key="hcurves",
                             format_func=lambda c: label_of.get(c, c))
    c3, c4, c5, c6 = st.columns([1.2, 1, 1.6, 1.4])
    _qp_init("form", "power" if "power" in forms else (forms[0] if forms else ""),
             options=forms)
    form = c3.selectbox("Form", forms, key="form")
    _qp_init("offset", 1.0, cast=float)
    offset = c4.number_input("Offset", min_value=0.0, step=1.0, key="offset",
                             help="t = delay + offset (0 = none). Forms undefined at t = 0 need "
                                  "an offset when a curve has a zero delay.")
    _qp_init("win", False, cast=bool)
    use_win = c5.checkbox("Fit window (decades from first t)", key="win")
    _qp_init("wdec", (0.0, 2.0), cast=tuple)
    wdec = c5.slider("window", 0.0, 5.0, step=0.25, key="wdec", disabled=not use_win,
                     label_visibility="collapsed")
    axes_opts = ["log-log", "linear"]
    _qp_init("axes", "log-log", options=axes_opts)
    axes = c6.radio("Axes (normalised)", axes_opts, key="axes", horizontal=True)
    _qp_sync("mcurves", "hcurves", "form", "offset", "win", "wdec", "axes")
    window = (float(wdec[0]), float(wdec[1])) if use_win and wdec[1] > wdec[0] else None
    return {"model": mcurves, "human": hcurves, "form": form,
            "offset": float(offset) if offset and offset > 0 else None, "window": window,
            "axes": axes}


@st.cache_data(show_spinner="Building model curves…", max_entries=16)
def load_model_curves(root: str, signature: tuple, kind: str) -> tuple[pd.DataFrame, dict]:
    """Model curves of every run under ``root`` (cached); returns them and the per-run errors."""
    scan = load_runs(root, signature)
    return D.model_curves(scan.runs, kind)


def _label_curves(model: pd.DataFrame, human: pd.DataFrame,
                  user: pd.DataFrame | None) -> pd.DataFrame:
    """All curves in one table with ``dataset`` (run, shipped dataset or your CSV) and ``origin``.

    ``origin`` is ``model``, ``human: shipped`` or ``human: your CSV``: what the chart's shapes
    and the tables show, so that the user's own curves are never taken for shipped ones.
    """
    parts = []
    if len(model):
        parts.append(model.assign(dataset="run " + model["run_label"].astype(str),
                                  origin="model"))
    if len(human):
        parts.append(human.assign(origin="human: shipped"))
    if user is not None and len(user):
        parts.append(user.assign(origin=f"human: {D.USER_DATASET}"))
    if not parts:
        return pd.DataFrame(columns=[*D.TIDY_COLUMNS, "dataset", "origin"])
    return pd.concat(parts, ignore_index=True)


def compare_page(runs_root: Path, fits_root: Path) -> None:
    """The Compare page: model and human curves side by side, with point or Bayesian γ fits."""
    st.header("Compare model and human forgetting curves")
    sig = _runs_signature(str(runs_root))
    scan = load_runs(str(runs_root), sig)
    _show_scan_messages(scan)
    if not scan.runs:
        _no_runs_message(runs_root)
    _, human, _, herr = load_human()
    if herr:
        st.error(f"The human datasets cannot be loaded: {herr}")
    forms = _forms_fallback()

    kind = measure_ui()
    model_all, merrs = load_model_curves(str(runs_root), sig, kind)
    for label, msg in merrs.items():
        st.warning(f"No `{kind}` curve for run **{label}**: {msg}")
    user, uploads = user_csv_ui()
    everything = _label_curves(model_all, human, user)
    model_ids = list(pd.unique(everything.loc[everything["group"] == "model", "curve"]))
    humans = everything[everything["group"] == "human"]
    human_ids = list(pd.unique(humans["curve"]))
    label_of = {c: f"{c} ({d})" for c, d in zip(humans["curve"], humans["dataset"])
                if str(d).startswith(D.USER_DATASET)}
    default_human = (list(pd.unique(human.loc[~human["derived"], "curve"])) if len(human)
                     else [])
    sel = compare_ui(kind, model_ids, human_ids, default_human, forms, label_of)
    curves = everything[everything["curve"].isin(sel["model"] + sel["human"])]
    curves = curves.reset_index(drop=True)
    sel["measure"] = {g: sorted(curves.loc[curves["group"] == g, "measure"].astype(str).unique())
                      for g in ("model", "human")}
    rules = (f"measure: model `{', '.join(sel['measure']['model']) or '—'}` vs human "
             f"`{', '.join(sel['measure']['human']) or '—'}` · form: `{sel['form']}` · "
             f"offset: {sel['offset'] or 'none'} · window: {D.format_window(sel['window'])} "
             "(decades from each curve's first t)")
    # layout: curves, MLE fits, then the stored fit; filled in the order that is fastest to
    # show (data points and the stored fit's numbers first, the live fits, then the posterior
    # histogram, which needs ArviZ to read posterior.nc)
    curves_box, mle_box = st.container(), st.container()
    st.divider()
    bayes_box = st.container()
    slot = None
    if curves.empty:
        curves_box.info("Choose at least one model or human curve.")
    else:
        with curves_box:
            slot = _overlay_points(curves, sel, rules)
    with bayes_box:
        finish = bayes_ui(fits_root, sel, list(curves["curve"].unique()))
    if slot is not None:
        fitting, why = _fitting()
        with mle_box:
            _overlay_fits(curves, sel, fitting, why, slot, kind)
    if finish is not None:
        finish()
    with bayes_box:
        _on_demand_ui(curves, sel, kind, scan, fits_root, uploads)


def _forms_fallback() -> list[str]:
    try:
        from cram.fitting.forms import FORMS

        return list(FORMS)
    except Exception:  # noqa: BLE001
        return ["power"]


def _points_frame(curves: pd.DataFrame, sel: dict) -> pd.DataFrame:
    pts = D.normalise_curves(D.add_time(curves, sel["offset"]), time_col="t")
    pts["in window"] = D.window_mask(pts, sel["window"])
    if sel["axes"] == "log-log":
        pts = pts[(pts["t_norm"] > 0) & (pts["v_norm"] > 0)]
    return pts


def _curves_chart(pts: pd.DataFrame, lines: pd.DataFrame | None, log: bool):
    scale = alt.Scale(type="log") if log else alt.Scale(zero=True)
    shape = "origin:N" if "origin" in pts.columns else "group:N"
    base = alt.Chart(pts).mark_point(filled=True, size=45).encode(
        x=alt.X("t_norm:Q", scale=scale, title="t / t₀ (t₀ = first t > 0 of each curve)"),
        y=alt.Y("v_norm:Q", scale=scale, title="value / value at t₀"),
        color=alt.Color("curve:N"), shape=alt.Shape(shape, title="curve from"),
        opacity=alt.condition("datum['in window']", alt.value(1.0), alt.value(0.25)),
        tooltip=["curve", *(["dataset"] if "dataset" in pts.columns else []), "group",
                 "measure", "delay_value", "delay_unit", "value", "n"])
    layers = [base]
    if lines is not None and len(lines):
        layers.append(alt.Chart(lines).mark_line(strokeDash=[4, 2]).encode(
            x="t_norm:Q", y="v_norm:Q", color="curve:N", detail="curve:N"))
    return alt.layer(*layers).interactive()


def _overlay_points(curves: pd.DataFrame, sel: dict, rules: str):
    """Draw the data at once; return the chart's slot, redrawn with the fits later."""
    st.subheader("Curves")
    st.caption(rules)
    slot = st.empty()
    slot.altair_chart(_curves_chart(_points_frame(curves, sel), None,
                                    sel["axes"] == "log-log"), width="stretch")
    st.caption("Points: data (faded outside the fit window); shapes say where a curve comes "
               "from (a model run, a shipped dataset or your CSV). Dashed: the live MLE fit of "
               "each curve. On log-log axes a power law is a straight line of slope −γ.")
    return slot


def _overlay_fits(curves: pd.DataFrame, sel: dict, fitting, why: str | None, slot,
                  kind: str) -> None:
    """Quick MLE fit of every chosen curve: the table, the fitted lines, Δγ of one pair."""
    st.subheader("Quick MLE fits (live)")
    if fitting is None:
        st.warning(f"Live fits are unavailable: {why}")
        return
    log = sel["axes"] == "log-log"
    pts = _points_frame(curves, sel)
    rows, lines, errors = [], [], []
    for cid, sub in curves.groupby("curve", sort=False):
        row, line, err = mle_fit(sub.reset_index(drop=True), sel["form"], sel["window"],
                                 sel["offset"])
        if err:
            errors.append(f"{cid}: {err}")
            continue
        rows.append(row)
        ref = pts[pts["curve"] == cid]
        if line is not None and len(ref) and np.isfinite(ref["t0"].iloc[0]) \
                and ref["v0"].iloc[0] > 0:
            line = line.assign(curve=cid, group=row["group"],
                               t_norm=line["t"] / ref["t0"].iloc[0],
                               v_norm=line["pred"] / ref["v0"].iloc[0])
            lines.append(line[line["v_norm"] > 0] if log else line)
    if lines:
        slot.altair_chart(_curves_chart(pts, pd.concat(lines, ignore_index=True), log),
                          width="stretch")
    for e in errors:
        st.warning(f"No fit for {e}")
    if not rows:
        return
    table = pd.DataFrame(rows)
    st.dataframe(table.drop(columns=["gamma se"], errors="ignore"), hide_index=True,
                 width="stretch")
    if "gamma low" in table.columns:
        st.caption(f"gamma low, gamma high: the {D.ci_label(0.9)} of each curve's γ "
                   "(Wald: estimate ± z · standard error).")
    mine = table[table["dataset"].astype(str).str.startswith(D.USER_DATASET)]
    for r in mine.to_dict("records"):
        st.markdown(f"**{r['dataset']}** · `{r['curve']}`: {_gamma_text(r)}")
    _pair_section(table, kind)


def _gamma_text(row: dict) -> str:
    """``γ = 0.312, 90% confidence interval (MLE) [0.25, 0.37]`` for one MLE row."""
    if not _is_number(row.get("gamma")):
        return "no γ in this form"
    text = f"γ = {row['gamma']:.3f} (MLE)"
    if _is_number(row.get("gamma low")) and _is_number(row.get("gamma high")):
        text += f", {D.ci_label(0.9)} [{row['gamma low']:.3f}, {row['gamma high']:.3f}]"
    return text


def _pair_section(table: pd.DataFrame, kind: str) -> None:
    """Δγ (MLE) of one model curve and one human curve, labelled with both; never a mean."""
    st.subheader("Δγ of one model curve against one human curve (MLE)")
    if "gamma" not in table.columns:
        st.info("This form has no γ, so there is no Δγ.")
        return
    fitted = table[table["gamma"].notna()]
    mids = list(fitted.loc[fitted["group"] == "model", "curve"])
    hids = list(fitted.loc[fitted["group"] == "human", "curve"])
    if not mids or not hids:
        st.info("Δγ needs a fitted model curve and a fitted human curve.")
        return
    by = fitted.set_index("curve")
    _qp_init("dpm", mids[0], options=mids)
    _qp_init("dph", hids[0], options=hids)
    pending = st.session_state.pop("_dph_new", None)
    if pending in hids:
        st.session_state["dph"] = pending
    for key, opts in (("dpm", mids), ("dph", hids)):
        if st.session_state.get(key) not in opts:
            st.session_state[key] = opts[0]
    c1, c2 = st.columns(2)
    m = c1.selectbox("Model curve of the pair", mids, key="dpm")
    h = c2.selectbox("Human curve of the pair", hids, key="dph",
                     format_func=lambda c: f"{c} ({by.loc[c, 'dataset']})")
    _qp_sync("dpm", "dph")
    mr, hr = by.loc[m], by.loc[h]
    d = D.delta_gamma_mle(mr["gamma"], mr.get("gamma se", np.nan), hr["gamma"],
                          hr.get("gamma se", np.nan))
    c1, c2 = st.columns([1, 2])
    c1.metric("Δγ (MLE)", f"{d['delta']:+.3f}")
    c2.metric(D.ci_label(d["level"]), f"[{d['low']:+.3f}, {d['high']:+.3f}]"
              if np.isfinite(d["low"]) else "undefined (no standard error)")
    st.caption(f"Δγ = γ(`{m}`, model curve `{kind}`, {mr['dataset']}) − γ(`{h}`, human curve "
               f"from {hr['dataset']}). It describes this pair only. The interval combines the "
               "two fits' standard errors as independent (√(se₁² + se₂²)).")


# --------------------------------------------------------------------------------------------
# fit folders: a stored Δγ, labelled with what it compared


def bayes_ui(fits_root: Path, sel: dict, chosen: list[str]):
    """Pick a fit folder below ``fits_root`` and show it; returns the histogram's drawer."""
    st.subheader("Δγ = γ_model − γ_human of a stored fit (fit folder)")
    fits = D.find_fits(fits_root) if fits_root.exists() else []
    if not fits:
        st.info(f"No precomputed fit below `{fits_root}`. Write one with "
                "`cram fit gamma ... --out DIR` (`make demo` writes `runs/demo/fit/`), "
                "or run one on the current selection below.")
        return None
    labels = [D.run_label(p, fits_root) for p in fits]
    _qp_init("fit", labels[0], options=labels)
    pick = st.session_state.pop("_fit_pick", None)
    if pick in labels:  # the folder an on-demand fit just wrote
        st.session_state["fit"] = pick
    label = st.selectbox("Fit folder", labels, key="fit")
    _qp_sync("fit")
    path = fits[labels.index(label)]
    fit, err = load_fit(str(path), D.folder_signature(path))
    if err:
        st.error(f"The fit folder `{path}` cannot be shown: {err}")
        return None
    return show_fit(fit, sel, chosen)


def _compared(fit: D.FitFolder, chosen: list[str] | None) -> None:
    """What the fit compared (its own curves), and the chosen curves it does not cover."""
    inputs = D.describe_inputs(fit)
    st.markdown(f"**This fit compared** model curves {inputs['model'] or '—'} against human "
                f"curves of {inputs['human'] or '—'}. Its Δγ is the difference of the two "
                "groups' γ for exactly these curves.")
    fitted = set(fit.inputs()["curve"])
    if chosen and fitted:
        missing = [c for c in chosen if c not in fitted]
        if missing:
            more = f" and {len(missing) - 6} more" if len(missing) > 6 else ""
            st.caption(f"Not in this fit, so not covered by its Δγ: {', '.join(missing[:6])}"
                       f"{more}. Run a Bayesian fit of the current selection below to "
                       "include them.")


def show_fit(fit: D.FitFolder, sel: dict | None = None, chosen: list[str] | None = None):
    """Δγ of one fit folder, with what it compared; returns a function drawing its histogram.

    The numbers come from the fit itself: the mean and P(...) from ``result.json``, the HDI
    from ``summary.csv`` (``az.summary``) or :func:`arviz.hdi` on ``posterior.nc``. The
    histogram needs the draws (ArviZ), so it is drawn when the returned function is called.
    """
    for w in fit.warnings:
        st.warning(w)
    st.markdown(f"**{fit.describe()}**")
    _compared(fit, chosen)
    diag = fit.result.get("diagnostics")
    if isinstance(diag, dict) and diag.get("ok") is False:
        st.warning("Sampler diagnostics failed for this fit; read the posterior with care: "
                   + "; ".join(str(w) for w in diag.get("warnings", [])[:4]))
    if sel is not None and fit.form != sel["form"]:
        st.caption(f"This fit used form `{fit.form}`; the live fits above use `{sel['form']}`.")
    stored = fit.result.get("delta_gamma")
    if not isinstance(stored, dict) or not fit.has_posterior:
        st.info("This fit has no posterior of Δγ (a point fit, or a fit of one group only); "
                "its per-curve results are in the summary below.")
        _fit_tables(fit)
        return None
    prob = fit.interval_prob
    rules = fit.result.get("rules") if isinstance(fit.result.get("rules"), dict) else {}
    rope = float(stored.get("rope", rules.get("rope", 0.05)))
    hdi = fit.hdi("delta_gamma", prob)
    c1, c2, c3, c4 = st.columns([1, 1.9, 1, 1])
    c1.metric("Δγ posterior mean", _num(stored.get("mean"), "+.3f"))
    c2.metric(D.hdi_label(prob), f"[{hdi.low:+.3f}, {hdi.high:+.3f}]" if hdi else "—")
    c3.metric("P(Δγ > 0)", _num(stored.get("p_positive"), ".2f"))
    c4.metric(f"P(|Δγ| < {rope:g})", _num(stored.get("p_in_rope"), ".2f"))
    st.caption(D.intervals_caption(prob))
    if stored.get("verdict"):
        st.markdown(f"Verdict stored by the fit: **{stored['verdict']}** (`cram fit gamma` "
                    f"decides it on Δγ's central {prob:.0%} credible interval against the ROPE "
                    f"±{rope:g}).")
    box = st.container()
    _fit_tables(fit, prob)

    def finish() -> None:
        with box:
            _delta_histogram(fit, hdi, rope)

    return finish


def _num(v, fmt: str) -> str:
    return format(float(v), fmt) if _is_number(v) else "—"


def _delta_histogram(fit: D.FitFolder, hdi, rope: float) -> None:
    """The posterior draws of Δγ with the ROPE band, the HDI and zero."""
    draws, warns = load_draws(str(fit.path), D.folder_signature(fit.path))
    for w in warns:
        st.warning(w)
    x = draws.get("delta_gamma")
    if x is None or len(x) == 0:
        st.info("No posterior draws of Δγ to plot.")
        return
    bars = alt.Chart(pd.DataFrame({"delta_gamma": x})).mark_bar(opacity=0.75).encode(
        x=alt.X("delta_gamma:Q", bin=alt.Bin(maxbins=50), title="Δγ = γ_model − γ_human"),
        y=alt.Y("count():Q", title="draws"))
    band = alt.Chart(pd.DataFrame({"lo": [-rope], "hi": [rope]})).mark_rect(
        opacity=0.15, color="gray").encode(x="lo:Q", x2="hi:Q")
    layers = [band, bars]
    if hdi is not None:
        layers.append(alt.Chart(pd.DataFrame({"x": [hdi.low, hdi.high]})).mark_rule(
            color="firebrick", strokeDash=[4, 3]).encode(x="x:Q"))
    layers.append(alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(color="black").encode(
        x="x:Q"))
    st.altair_chart(alt.layer(*layers), width="stretch")
    st.caption(f"{len(x)} posterior draws. Grey band: ROPE ±{rope:g}; red dashed: the "
               f"{D.hdi_label(hdi.prob if hdi else 0.9)}; black: 0.")


def _fit_tables(fit: D.FitFolder, prob: float | None = None) -> None:
    """γ per group and curve (HDI from summary.csv), the full summary and the extra tables."""
    post = fit.posterior_table(prob)
    post = post[post["variable"].astype(str).str.match(r"(mu_gamma|gamma|delta_gamma)\b")]
    if len(post):
        st.dataframe(post.rename(columns={"hdi_low": "HDI low", "hdi_high": "HDI high"}),
                     hide_index=True, width="stretch")
        level = fit.interval_prob if prob is None else prob
        st.caption(f"HDI low, HDI high: the {D.hdi_label(level)} of each variable, as the fit "
                   "wrote it (summary.csv, az.summary).")
    if fit.summary is not None:
        with st.expander("Full summary (summary.csv)"):
            st.dataframe(fit.summary, hide_index=True, width="stretch")
    for name in ("window_sensitivity", "loo_compare"):
        try:
            table = fit.extra(name)
        except Exception as err:  # noqa: BLE001
            st.warning(str(err))
            continue
        if table is not None:
            with st.expander(f"{name.replace('_', ' ').capitalize()} ({name}.csv)"):
                st.dataframe(table, hide_index=True, width="stretch")
    if fit.figures:
        with st.expander(f"Figures ({len(fit.figures)} in figures/)"):
            for f in fit.figures:
                st.image(str(f), caption=f.name)


# --------------------------------------------------------------------------------------------
# an on-demand Bayesian fit: `cram fit gamma` in a subprocess, into a new fit folder


def _fit_request(curves: pd.DataFrame, sel: dict, kind: str, scan: D.RunScan,
                 out: Path, uploads: dict, seed: int, draws: int) -> tuple[D.FitRequest, dict]:
    """The ``cram fit gamma`` call for the chosen curves' inputs, and the uploads it needs."""
    labels = list(pd.unique(curves.loc[curves["group"] == "model", "run_label"]))
    runs = [scan.runs[lab].path for lab in labels if lab in scan.runs]
    human = curves[curves["group"] == "human"]
    mine = D.is_user_curve(human)
    datasets = [str(d) for d in pd.unique(human.loc[~mine, "dataset"])]
    need = uploads if mine.any() else {}
    req = D.FitRequest(out=out, runs=runs, kind=kind, datasets=datasets,
                       csvs=[Path(f"{out}-inputs") / D.user_csv_name(n) for n in need],
                       form=sel["form"], offset=sel["offset"], window=sel["window"],
                       seed=seed, draws=draws)
    return req, need


def _on_demand_ui(curves: pd.DataFrame, sel: dict, kind: str, scan: D.RunScan,
                  fits_root: Path, uploads: dict) -> None:
    """The button that runs ``cram fit gamma --method bayes`` on the selection's inputs.

    The fit runs in a subprocess (the app never imports PyMC) into a new folder below the fits
    folder, which is then shown through the fit-folder reader like any stored fit.
    """
    st.subheader("Bayesian fit of the current selection (on demand)")
    groups = set(curves["group"]) if len(curves) else set()
    if groups != {"model", "human"}:
        st.info("Choose at least one model curve and one human curve to fit Δγ.")
        return
    c1, c2 = st.columns(2)
    _qp_init("bseed", 0, cast=int)
    seed = c1.number_input("Seed", min_value=0, step=1, key="bseed")
    draws = c2.select_slider("Draws per chain (2 chains)", [250, 500, 1000], value=500,
                             key="bdraws")
    _qp_sync("bseed")
    shown = Path(fits_root) / D.APP_FITS_DIR / "bayes-<UTC time>"
    req, need = _fit_request(curves, sel, kind, scan, shown, uploads, int(seed), int(draws))
    st.caption("Runs `cram fit gamma --method bayes` in a separate process (PyMC's NUTS, "
               "hierarchical over curves; a minute or more on 2 cores) and writes a new fit "
               f"folder below `{shown.parent}`, shown here and listed as a stored fit. "
               "`cram fit gamma` takes whole inputs: every curve of each run and dataset "
               "named below (derived curves are left out), not a subset of them.")
    st.code(shlex.join(["cram", *req.command()[3:]]), language="bash")
    if not st.button("Run Bayesian fit", key="bayes_go"):
        return
    out = D.new_fit_folder(fits_root)
    req, need = _fit_request(curves, sel, kind, scan, out, uploads, int(seed), int(draws))
    try:
        D.save_user_csvs(out, need)
    except OSError as err:
        st.error(f"Cannot write below `{out.parent}`: {err}")
        return
    with st.spinner(f"cram fit gamma is running (writing `{out}`)…"):
        path, err = D.run_fit(req)
    if err:
        st.error(f"The fit failed: {err}")
        return
    st.success(f"Wrote `{path}`.")
    st.session_state["_fit_pick"] = D.run_label(path, fits_root)
    fit, lerr = load_fit(str(path), D.folder_signature(path))
    if lerr:
        st.error(f"The new fit folder cannot be shown: {lerr}")
        return
    finish = show_fit(fit, sel, list(curves["curve"].unique()))
    if finish is not None:
        finish()


# ============================================================================================
# Claims page


def claims_page() -> None:
    """The Claims page: the paper's claims and what was measured here (claims/registry.toml).

    Filters by status and section (none chosen = all; query parameters ``status`` and ``sec``),
    counts per status, the short table of docs/claims.md, and an expander per claim with its
    summary, command and detail.
    """
    from cram.core.claims import STATUS_MEANING, STATUSES, slug

    st.header("Paper claims and what we measured")
    path = Path(os.environ.get("CRAM_APP_CLAIMS") or D.default_claims_path())
    claims, err = load_claims(str(path), D.folder_signature(path.parent)
                              if path.parent.is_dir() else ())
    if err:
        st.warning(f"No claims to show: {err}")
        return
    st.caption(f"From `{path}`, the registry docs/claims.md is rendered from. "
               + " ".join(f"**{k}**: {v}." for k, v in STATUS_MEANING.items()))
    sections = {slug(name): name for name in dict.fromkeys(claims["section"])}
    _qp_init("status", [], options=STATUSES, multi=True)
    _qp_init("sec", [], options=list(sections), multi=True)
    left, right = st.columns(2)
    chosen = left.multiselect("Status", list(STATUSES), key="status", placeholder="all statuses")
    secs = right.multiselect("Section", list(sections), key="sec", format_func=sections.get,
                             placeholder="all sections")
    _qp_sync("status", "sec")
    shown = claims[claims["status"].isin(chosen or STATUSES)
                   & claims["section"].isin([sections[k] for k in secs] or sections.values())]
    for col, status in zip(st.columns(len(STATUSES)), STATUSES):
        col.metric(status, int((shown["status"] == status).sum()))
    if shown.empty:
        st.info("No claim matches these filters.")
        return
    table = shown[["section", "claim", "paper", "status", "ours_cell", "seeds"]]
    widths = {"section": "small", "claim": "medium", "paper": "medium", "status": "small",
              "ours": "large", "seeds": "small"}
    st.dataframe(table.rename(columns={"ours_cell": "ours"}), hide_index=True, width="stretch",
                 column_config={k: st.column_config.TextColumn(k, width=w)
                                for k, w in widths.items()})
    st.subheader("Details")
    for row in shown.itertuples(index=False):
        with st.expander(f"{row.claim} · {row.status}"):
            _claim_detail(row)


def _claim_detail(row) -> None:
    """One claim's detail: verdict, values, staleness, command and the detail markdown."""
    st.markdown(f"*{row.section}* · **{row.status}** · paper: {row.paper}")
    st.markdown(row.summary)
    facts = [("Ours", row.ours), ("Interval", row.interval), ("Seeds", row.seeds),
             ("Units", row.units), ("Result file", f"`{row.result}`" if row.result else "")]
    st.markdown("\n".join(f"- **{k}:** {v}" for k, v in facts if v))
    if row.stale:
        st.warning(f"Stale: {row.stale}")
    st.code(row.command.strip(), language="bash")
    # links to other claims' anchors point into docs/claims.md; here they become bold names
    st.markdown(re.sub(r"\[([^\]]+)\]\(#[^)]+\)", r"**\1**", row.detail))


# ============================================================================================


def main() -> None:
    """The explorer: the sidebar chooses a page; an unexpected error becomes a message."""
    st.set_page_config(page_title="CRAM explorer", layout="wide")
    page, runs_root, fits_root = sidebar_ui()
    try:
        if page == "Runs":
            runs_page(runs_root, fits_root)
        elif page == "Human data":
            human_page()
        elif page == "Compare":
            compare_page(runs_root, fits_root)
        else:
            claims_page()
    except Exception as err:  # noqa: BLE001 - the last line of defence: a message, not a traceback
        st.error(f"This page hit an unexpected problem: {type(err).__name__}: {err}. "
                 "Please report it with the URL of this view.")


if __name__ == "__main__":
    main()
