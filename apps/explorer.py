"""CRAM explorer: runs, human forgetting data, model-human γ comparison and the paper's claims.

Start it with ``cram app`` (Streamlit on 127.0.0.1). The app only reads: run folders written by
``cram train`` (docs/run_folder.md), fit folders written by ``cram fit gamma --out`` and the
claims registry ``claims/registry.toml`` (from which docs/claims.md is rendered). Live work is
limited to quick MLE fits; Bayesian fits are read from fit folders, or run on demand behind a
button and cached.

Layout: :func:`main` plus one ``*_page`` function per page; ``*_ui`` functions draw widgets and
return the selection. Every widget's value is mirrored into ``st.query_params`` (the widget key is
the parameter name), so a view can be shared as a link. Loaders are wrapped in ``st.cache_data``
and keyed on the files' sizes and modification times.
"""

from __future__ import annotations

import os
import re
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
    """A fit folder, or ``(None, message)`` when it cannot be read."""
    try:
        return D.load_fit_folder(path), None
    except Exception as err:  # noqa: BLE001 - shown to the user, never a traceback
        return None, str(err)


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
    row = {"curve": str(curve["curve"].iloc[0]), "group": str(curve["group"].iloc[0]),
           "measure": str(curve["measure"].iloc[0]), "unit": str(curve["delay_unit"].iloc[0])}
    params = dict(res.params)
    row.update({k: float(v) for k, v in params.items() if _is_number(v)})
    try:
        ci = res.conf_int(alpha=0.1)
        if "gamma" in params and ci is not None and "gamma" in getattr(ci, "index", []):
            lo, hi = ci.loc["gamma"].iloc[0], ci.loc["gamma"].iloc[1]
            row["gamma 90% low"], row["gamma 90% high"] = float(lo), float(hi)
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


def runs_page(runs_root: Path) -> None:
    """The Runs page: attention over training, tiers, patterns, library/novel and retention."""
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
    _retention_section(run, focus)


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
        popts = [c for c in ("episodic_share", "q", "qhat") if c in run.patterns.columns]
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


def compare_ui(kind: str, model_ids: list[str], human_ids: list[str],
               default_human: list[str], forms: list[str]) -> dict:
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
    hcurves = c2.multiselect("Human curves", human_ids, key="hcurves")
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
    model_ids = list(pd.unique(model_all["curve"])) if len(model_all) else []
    human_ids = list(pd.unique(human["curve"])) if len(human) else []
    default_human = (list(pd.unique(human.loc[~human["derived"], "curve"])) if len(human)
                     else [])
    sel = compare_ui(kind, model_ids, human_ids, default_human, forms)
    parts = [model_all[model_all["curve"].isin(sel["model"])]]
    if len(human):
        parts.append(human[human["curve"].isin(sel["human"])])
    curves = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(
        len(p) for p in parts) else pd.DataFrame(columns=list(D.TIDY_COLUMNS))
    sel["measure"] = {g: sorted(curves.loc[curves["group"] == g, "measure"].astype(str).unique())
                      for g in ("model", "human")}
    rules = (f"measure: model `{', '.join(sel['measure']['model']) or '—'}` vs human "
             f"`{', '.join(sel['measure']['human']) or '—'}` · form: `{sel['form']}` · "
             f"offset: {sel['offset'] or 'none'} · window: {D.format_window(sel['window'])} "
             "(decades from each curve's first t)")
    # layout: curves, MLE table, then the posterior; filled in the order that is fastest to
    # show (data points and the stored posterior first, the live fits last)
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
        bayes_ui(fits_root, sel)
    if slot is not None:
        fitting, why = _fitting()
        with mle_box:
            _overlay_fits(curves, sel, fitting, why, slot)
    with bayes_box:
        _on_demand_ui(curves, sel)


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
    base = alt.Chart(pts).mark_point(filled=True, size=45).encode(
        x=alt.X("t_norm:Q", scale=scale, title="t / t₀ (t₀ = first t > 0 of each curve)"),
        y=alt.Y("v_norm:Q", scale=scale, title="value / value at t₀"),
        color=alt.Color("curve:N"), shape=alt.Shape("group:N"),
        opacity=alt.condition("datum['in window']", alt.value(1.0), alt.value(0.25)),
        tooltip=["curve", "group", "measure", "delay_value", "delay_unit", "value", "n"])
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
    st.caption("Points: data (faded outside the fit window). Dashed: the live MLE fit of each "
               "curve. On log-log axes a power law is a straight line of slope −γ.")
    return slot


def _overlay_fits(curves: pd.DataFrame, sel: dict, fitting, why: str | None, slot) -> None:
    """Quick MLE fit of every chosen curve: the table, and the fitted lines on the chart."""
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
    if rows:
        table = pd.DataFrame(rows)
        st.dataframe(table, hide_index=True, width="stretch")
        if "gamma" in table.columns:
            g = table.groupby("group")["gamma"].mean()
            if {"model", "human"} <= set(g.index):
                st.caption(f"Mean MLE γ: model {g['model']:.3f}, human {g['human']:.3f}, "
                           f"difference {g['model'] - g['human']:+.3f} (point estimates; see the "
                           "posterior below for uncertainty).")


# --------------------------------------------------------------------------------------------
# Bayesian results


def bayes_ui(fits_root: Path, sel: dict) -> None:
    """Pick a precomputed fit folder below ``fits_root`` and show it."""
    st.subheader("Posterior of Δγ = γ_model − γ_human")
    fits = D.find_fits(fits_root) if fits_root.exists() else []
    bayes = [f for f in fits]
    if not bayes:
        st.info(f"No precomputed fit below `{fits_root}`. Write one with "
                "`cram fit gamma ... --out DIR` (`make demo` writes `runs/demo/fit/`), "
                "or run one on the current selection below.")
    else:
        labels = [D.run_label(p, fits_root) for p in bayes]
        _qp_init("fit", labels[0], options=labels)
        label = st.selectbox("Precomputed fit", labels, key="fit")
        _qp_sync("fit")
        path = bayes[labels.index(label)]
        fit, err = load_fit(str(path), D.folder_signature(path))
        if err:
            st.error(f"The fit folder `{path}` cannot be shown: {err}")
        else:
            show_fit(fit, sel)


def show_fit(fit: D.FitFolder, sel: dict | None = None) -> None:
    """Δγ posterior (or point estimate) of one fit folder, with its measure, form and window."""
    for w in fit.warnings:
        st.warning(w)
    st.markdown(f"**{fit.describe()}**")
    diag = fit.result.get("diagnostics")
    if isinstance(diag, dict) and diag.get("ok") is False:
        st.warning("Sampler diagnostics failed for this fit; read the posterior with care: "
                   + "; ".join(str(w) for w in diag.get("warnings", [])[:4]))
    if sel is not None and fit.form != sel["form"]:
        st.caption(f"This fit used form `{fit.form}`; the live fits above use `{sel['form']}`.")
    draws = fit.draws.get("delta_gamma")
    rope = (fit.result.get("rules") or {}).get("rope", 0.05) if isinstance(
        fit.result.get("rules"), dict) else 0.05
    if draws is None or len(draws) == 0:
        dg = fit.result.get("delta_gamma")
        if isinstance(dg, dict) or _is_number(dg):
            st.info("This fit has no posterior draws of Δγ (a point fit or a single group); "
                    "its result is shown as stored.")
            st.json(dg if isinstance(dg, dict) else {"delta_gamma": dg})
        else:
            st.info("This fit has no Δγ (it needs both a model and a human group).")
        return
    s = D.posterior_stats(draws, hdi_prob=0.9)
    in_rope = float(np.mean(np.abs(draws) < rope))
    c1, c2, c3, c4 = st.columns([1, 1.7, 1, 1])
    c1.metric("Δγ posterior mean", f"{s['mean']:+.3f}")
    c2.metric("90% HDI", f"[{s['hdi_low']:+.3f}, {s['hdi_high']:+.3f}]")
    c3.metric("P(Δγ > 0)", f"{s['p_positive']:.2f}")
    c4.metric(f"P(|Δγ| < {rope:g})", f"{in_rope:.2f}")
    hist = pd.DataFrame({"delta_gamma": draws})
    bars = alt.Chart(hist).mark_bar(opacity=0.75).encode(
        x=alt.X("delta_gamma:Q", bin=alt.Bin(maxbins=50), title="Δγ = γ_model − γ_human"),
        y=alt.Y("count():Q", title="draws"))
    band = alt.Chart(pd.DataFrame({"lo": [-rope], "hi": [rope]})).mark_rect(
        opacity=0.15, color="gray").encode(x="lo:Q", x2="hi:Q")
    hdi = alt.Chart(pd.DataFrame({"x": [s["hdi_low"], s["hdi_high"]]})).mark_rule(
        color="firebrick", strokeDash=[4, 3]).encode(x="x:Q")
    zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(color="black").encode(x="x:Q")
    st.altair_chart(alt.layer(band, bars, hdi, zero), width="stretch")
    st.caption(f"{s['n_draws']} posterior draws. Grey band: ROPE ±{rope:g}; red dashed: 90% HDI; "
               f"black: 0. {fit.describe()}.")
    stored = fit.result.get("delta_gamma")
    if isinstance(stored, dict) and stored.get("statement"):
        st.markdown(f"Verdict (`{stored.get('verdict', '?')}`): {stored['statement']}.")
    other = {k: v for k, v in fit.draws.items() if k.startswith(("gamma", "mu_g"))}
    if other:
        rows = [{"variable": k, **D.posterior_stats(v)} for k, v in other.items()]
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    if fit.summary is not None:
        with st.expander("ArviZ summary (summary.csv)"):
            st.dataframe(fit.summary, hide_index=True, width="stretch")
    ws = fit.path / "window_sensitivity.csv"
    if ws.is_file():
        with st.expander("Window sensitivity (window_sensitivity.csv)"):
            try:
                st.dataframe(pd.read_csv(ws), hide_index=True, width="stretch")
            except Exception as err:  # noqa: BLE001
                st.warning(f"{ws}: cannot be read ({err})")


@st.cache_data(show_spinner=False, max_entries=8)
def bayes_fit(curves: pd.DataFrame, form: str, window: tuple | None, offset: float | None,
              seed: int, draws: int) -> dict:
    """Hierarchical PyMC fit of the selection (cached per data and rules).

    Returns the flattened scalar draws, the ArviZ summary and the Δγ statement of
    :func:`cram.fitting.bayes.fit_bayes`; predictive checks, LOO and prior sensitivity are
    skipped to keep it to about a minute on 2 cores.
    """
    from cram.fitting import ComparisonRules
    from cram.fitting.bayes import fit_bayes

    rules = ComparisonRules(form=form, window=window, offset=offset)
    res = fit_bayes(curves, rules, draws=draws, tune=draws, chains=2, seed=seed,
                    progress=False, prior_predictive=False, posterior_predictive=False,
                    loo=False, prior_sensitivity=False)
    post = res.idata.posterior
    out = {}
    for name, var in post.data_vars.items():
        if set(var.dims) <= {"chain", "draw"}:
            out[str(name)] = np.asarray(var.values, dtype=float).reshape(-1)
        elif name == "mu_gamma" and "group" in var.dims:
            for g in var["group"].values:
                out[f"mu_gamma[{g}]"] = np.asarray(var.sel(group=g).values).reshape(-1)
    return {"draws": out, "summary": res.summary, "delta": res.delta_gamma,
            "warnings": list(res.warnings), "rules": rules.to_dict(),
            "measures": sorted(res.curves["measure"].astype(str).unique()),
            "seconds": res.timings.get("total_s")}


def _on_demand_ui(curves: pd.DataFrame, sel: dict) -> None:
    with st.expander("Bayesian fit of the current selection (on demand)"):
        try:
            import cram.fitting.bayes  # noqa: F401 - PyMC itself loads only when sampling
        except Exception as err:  # noqa: BLE001
            st.info(f"On-demand Bayesian fits are unavailable ({type(err).__name__}: {err}); "
                    "use `cram fit gamma ... --out DIR`.")
            return
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
        st.caption("PyMC's NUTS, hierarchical over curves (target acceptance 0.99); about a "
                   "minute on 2 cores the first time, instant afterwards (cached for this "
                   "selection and seed).")
        if not st.button("Run Bayesian fit", key="bayes_go"):
            return
        with st.status("Bayesian fit: compiling and sampling…", expanded=True) as status:
            st.write(f"{curves['curve'].nunique()} curves · form `{sel['form']}` · "
                     f"window {D.format_window(sel['window'])} · offset {sel['offset'] or 'none'}")
            try:
                res = bayes_fit(curves, sel["form"], sel["window"], sel["offset"], int(seed),
                                int(draws))
            except Exception as err:  # noqa: BLE001 - shown, never a traceback
                status.update(label="Bayesian fit failed", state="error")
                st.error(f"The fit failed: {err}")
                return
            status.update(label=f"Bayesian fit done ({res['seconds'] or 0:.0f} s)",
                          state="complete")
        fit = D.FitFolder(path=Path("(on demand)"),
                          result={"form": sel["form"], "method": "bayes (on demand)",
                                  "window": list(sel["window"]) if sel["window"] else None,
                                  "rules": res["rules"], "measure": res["measures"],
                                  "delta_gamma": res["delta"]},
                          summary=res["summary"], draws=res["draws"], warnings=res["warnings"])
        show_fit(fit, sel)


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
            runs_page(runs_root)
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
