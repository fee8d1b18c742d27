"""Seaborn/matplotlib figures for fit folders (written as PNG under ``figures/``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt, sns


#: at most this many curves are drawn per panel of ``curves.png`` (the first ones, in the
#: order of the data); the title says how many were left out. All are in ``curves.csv``.
MAX_CURVES_PER_PANEL = 20


def plot_curves_fit(curves: pd.DataFrame, predict, path: Path, title: str, ppc=None,
                    max_curves: int = MAX_CURVES_PER_PANEL) -> Path:
    """Observed points and fitted curves on log-log axes, one panel per delay unit.

    A panel draws at most ``max_curves`` curves (the first ones) and says so in its title when
    it leaves some out: a hundred overlaid curves with a hundred legend entries show nothing.
    """
    plt, sns = _plt()
    units = list(dict.fromkeys(curves["delay_unit"]))
    fig, axes = plt.subplots(1, len(units), figsize=(6 * len(units), 4.5), squeeze=False)
    bands = dict(tuple(ppc.groupby("curve", sort=False))) if ppc is not None else {}
    for ax, unit in zip(axes[0], units):
        sub = curves[curves["delay_unit"] == unit]
        groups = list(sub.groupby("curve", sort=False))
        shown = groups[:max_curves]
        pal = sns.color_palette("tab10", len(shown))
        for col, (cid, c) in zip(pal, shown):
            c = c.sort_values("t")
            ax.scatter(c["t"], c["value"], color=col, s=18, label=cid)
            tt = np.geomspace(max(c["t"].min(), 1e-3), c["t"].max(), 100)
            yy = predict(cid, tt)
            if yy is not None:
                ax.plot(tt, yy, color=col, lw=1.4)
            if ppc is not None and cid in bands:
                p = bands[cid].sort_values("t")
                ax.fill_between(p["t"], p["pp_low"], p["pp_high"], color=col, alpha=0.15)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"t = delay + offset ({unit})")
        ax.set_ylabel("value (proportion)")
        if len(groups) > len(shown):
            ax.set_title(f"first {len(shown)} of {len(groups)} curves shown (all in curves.csv)",
                         fontsize=9)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _is_false(value) -> bool:
    """True for False (Python or NumPy), not for None or NaN (form not checked)."""
    return value is not None and not (isinstance(value, float) and np.isnan(value)) \
        and not bool(value)


def _wrap(text: str, width: int = 110) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def plot_gamma_forest(table: pd.DataFrame, path: Path, title: str) -> Path:
    """γ estimate and interval per curve (and group means), coloured by group.

    A curve whose form check failed (``gamma_valid`` false) is drawn hollow and labelled
    "γ not a property".
    """
    plt, sns = _plt()
    t = table.dropna(subset=["gamma"]).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(t) + 1.5))
    colors = {"human": "tab:blue", "model": "tab:orange"}
    labels = []
    for i, r in t.iterrows():
        bad = _is_false(r.get("gamma_valid"))
        col = colors.get(r["group"], "k")
        ax.errorbar(r["gamma"], i, xerr=[[r["gamma"] - r["gamma_low"]],
                                         [r["gamma_high"] - r["gamma"]]],
                    fmt="D" if str(r["curve"]).startswith("group:") else "o",
                    color=col, mfc="white" if bad else col)
        labels.append(f"{r['curve']} (γ not a property: form check failed)" if bad
                      else str(r["curve"]))
    ax.set_yticks(range(len(t)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("γ (estimate and interval)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_delta(delta: np.ndarray, rope: float, path: Path) -> Path:
    """Posterior of Δγ = γ_model − γ_human with the ROPE shaded."""
    plt, sns = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    sns.histplot(delta, stat="density", kde=True, ax=ax, color="tab:purple")
    ax.axvspan(-rope, rope, color="grey", alpha=0.25, label=f"ROPE ±{rope}")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("Δγ = γ_model − γ_human")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_window_sensitivity(ws: pd.DataFrame, path: Path, subtitle: str = "") -> Path:
    """γ (MLE, interval) against fit window: one line per curve, coloured by group.

    ``subtitle`` names the fit the table comes from; curves whose form check failed
    (``gamma_valid`` false) are drawn dashed.
    """
    plt, sns = _plt()
    order = list(dict.fromkeys(ws["window"]))
    colors = {"human": "tab:blue", "model": "tab:orange"}
    fig, ax = plt.subplots(figsize=(9, 5.2 if subtitle else 4.8))
    curves = list(dict.fromkeys(ws["curve"]))
    invalid = False
    for j, cid in enumerate(curves):
        c = ws[(ws["curve"] == cid) & (ws["status"] == "ok")]
        if c.empty:
            continue
        x = np.array([order.index(w) for w in c["window"]]) + (j - len(curves) / 2) * 0.03
        col = colors.get(c["group"].iloc[0], "k")
        bad = "gamma_valid" in c and any(_is_false(v) for v in c["gamma_valid"])
        invalid |= bool(bad)
        bars = ax.errorbar(x, c["gamma"], yerr=[c["gamma"] - c["gamma_low"],
                                                 c["gamma_high"] - c["gamma"]],
                           color=col, marker="o", ms=3, lw=0.8, alpha=0.8, capsize=0)
        if bad:
            bars.lines[0].set_linestyle("--")
    for g, col in colors.items():
        if (ws["group"] == g).any():
            ax.plot([], [], color=col, marker="o", label=g)
    if invalid:
        ax.plot([], [], color="grey", ls="--", label="form check failed: γ not a property")
    ax.set_xticks(range(len(order)), order)
    ax.set_ylabel("γ (MLE, interval)")
    ax.set_xlabel("fit window (decades from first t > 0)")
    ax.set_title("Window sensitivity: one line per curve"
                 + (f"\n{_wrap(subtitle)}" if subtitle else ""), fontsize=9 if subtitle else None)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_model_curves(df: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Plot model curves given as tidy rows, on log-x axes.

    Retention: one panel per condition, a line per training stage; per-pattern or reliance
    curves: one line per curve.
    """
    plt, sns = _plt()
    d = df.copy()
    d["x"] = d["delay_value"] + 1.0
    if "condition" in d.columns and d["condition"].astype(str).str.len().gt(0).all():
        conds = list(dict.fromkeys(d["condition"]))
        fig, axes = plt.subplots(1, len(conds), figsize=(5.5 * len(conds), 4.2), squeeze=False,
                                 sharey=True)
        for ax, cond in zip(axes[0], conds):
            sub = d[d["condition"] == cond]
            sns.lineplot(data=sub, x="x", y="value", hue="step", style="binding", marker="o",
                         ax=ax, palette="viridis", errorbar=None)
            ax.set_title(f"{cond}")
            ax.set_xscale("log")
            ax.set_xlabel(f"lag + 1 ({sub['delay_unit'].iloc[0]})")
            ax.set_ylabel("retrieval accuracy")
    else:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        sns.lineplot(data=d, x="x", y="value", hue="curve", ax=ax,
                     legend=d["curve"].nunique() <= 12, errorbar=None)
        ax.set_xscale("log")
        ax.set_xlabel(f"delay + 1 ({d['delay_unit'].iloc[0]})")
        ax.set_ylabel(d["measure"].iloc[0])
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
