"""Writing the study's results: CSV tables, the summary and the three-panel figure."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from cram.core.errors import RunFolderError
from cram.redundancy.probe import VARIANTS


def write_csv(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` as CSV (columns in first-seen order; None as empty); nothing if empty."""
    if not rows:
        return
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})


def prepare_out_dir(out_dir: str | os.PathLike) -> Path:
    """Create ``out_dir``; refuse one that exists and is not empty (nothing is overwritten)."""
    d = Path(out_dir)
    if d.exists() and (not d.is_dir() or any(d.iterdir())):
        raise RunFolderError(f"{d}: exists and is not empty; choose another --out (nothing was "
                             "overwritten)")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _entry(rows: list[dict], causal: list[dict], ck: str, v: str) -> dict:
    """Means over layers and the all-layer causal deltas of one checkpoint and token set."""
    lay = [r for r in rows if r["checkpoint"] == ck and r["tokens"] == v and r["head"] is None]
    heads = [r for r in rows if r["checkpoint"] == ck and r["tokens"] == v
             and r["head"] is not None]
    cz = [c for c in causal if c["checkpoint"] == ck and c["tokens"] == v and c["layer"] == "all"]
    c = cz[0] if cz else {}
    return {
        "mean_r2": float(np.mean([r["r2"] for r in lay])),
        "mean_predictable_fraction": float(np.mean([r["predictable_fraction"] for r in lay])),
        "mean_baseline_fraction": float(np.mean([r["baseline_fraction"] for r in lay])),
        "mean_head_r2": float(np.mean([r["r2"] for r in heads])) if heads else None,
        "all_layers_delta_loss_redundant": c.get("delta_loss_redundant"),
        "all_layers_delta_loss_random": c.get("delta_loss_random"),
        "all_layers_delta_loss_mean_ablation": c.get("delta_loss_mean_ablation"),
        "base_loss": c.get("base_loss"),
    }


def _trend(trained: list[dict]) -> dict:
    """Spearman ρ of step against the fraction and R², per token set (trained checkpoints)."""
    from scipy.stats import spearmanr

    trend: dict = {}
    steps = [e["step"] for e in trained]
    for v, _ in VARIANTS:
        for key in ("mean_predictable_fraction", "mean_r2"):
            rho = spearmanr(steps, [e[v][key] for e in trained]).statistic
            trend.setdefault(v, {})[f"spearman_step_vs_{key}"] = float(rho)
        trend[v]["first_trained"] = trained[0][v]["mean_predictable_fraction"]
        trend[v]["last"] = trained[-1][v]["mean_predictable_fraction"]
    return trend


def summarise(rows: list[dict], causal: list[dict]) -> dict:
    """Headline numbers per checkpoint and token set, and the trend over training.

    Per checkpoint: mean R² and predictable fraction over layers and the all-layer causal deltas.
    With three or more trained checkpoints (step > 0), ``trend`` gives Spearman ρ of step against
    the fraction and R².
    """
    out: dict = {"checkpoints": []}
    for ck, step in dict.fromkeys((r["checkpoint"], r["step"]) for r in rows):
        entry = {"checkpoint": ck, "step": step}
        for v, _ in VARIANTS:
            entry[v] = _entry(rows, causal, ck, v)
        out["checkpoints"].append(entry)
    trained = [e for e in out["checkpoints"] if e["step"] not in (None, 0)]
    if len(trained) >= 3:
        out["trend"] = _trend(trained)
    return out


_STYLE = {"no_first_token": "-", "all_tokens": "--"}


def _by_layer_panel(ax, lay: list[dict], last: str, n_layers: int) -> None:
    for v, style in _STYLE.items():
        sel = sorted((r for r in lay if r["checkpoint"] == last and r["tokens"] == v),
                     key=lambda r: r["layer"])
        name = v.replace("_", " ")
        ax.plot([r["layer"] for r in sel], [r["r2"] for r in sel], style, marker="o", color="C0",
                label=f"R² ({name})")
        ax.plot([r["layer"] for r in sel], [r["predictable_fraction"] for r in sel], style,
                marker="s", color="C1", label=f"predictable ({name})")
    ax.set(xlabel="layer", ylabel="value (R² clipped at -0.5)", title=f"by layer ({last})",
           ylim=(-0.5, 1.05))
    ax.set_xticks(range(n_layers))
    ax.legend(fontsize=7)


def _over_training_panel(ax, lay: list[dict], cks: list, n_layers: int) -> None:
    steps_known = all(s is not None for _, s in cks)
    for li in range(n_layers):
        for v, style in _STYLE.items():
            sel = [r for r in lay if r["layer"] == li and r["tokens"] == v]
            xs = [max(r["step"], 1) if steps_known else i for i, r in enumerate(sel)]
            ax.plot(xs, [r["predictable_fraction"] for r in sel], style, marker="o",
                    color=f"C{li}", label=f"layer {li}" if v == "no_first_token" else None)
    if steps_known and len(cks) > 1:
        ax.set_xscale("log")
    ax.set(xlabel="training step (0 plotted at 1)" if steps_known else "checkpoint",
           ylabel="predictable fraction", title="over training", ylim=(-0.05, 1.05))
    ax.legend(fontsize=7)


def _causal_panel(ax, causal: list[dict], last: str, n_layers: int) -> None:
    cz = [c for c in causal if c["checkpoint"] == last]
    labels = [str(li) for li in range(n_layers)] + ["all"]
    x = np.arange(len(labels))
    for j, (v, hatch) in enumerate((("no_first_token", ""), ("all_tokens", "//"))):
        by = {str(c["layer"]): c for c in cz if c["tokens"] == v}
        name = v.replace("_", " ")
        ax.bar(x + (j - 0.5) * 0.2 - 0.1, [by[k]["delta_loss_redundant"] for k in labels], 0.2,
               color="C2", hatch=hatch, label=f"probe on 'redundant' ({name})")
        ax.bar(x + (j - 0.5) * 0.2 + 0.3, [by[k]["delta_loss_random"] for k in labels], 0.2,
               color="C3", hatch=hatch, alpha=0.7, label=f"probe on random ({name})")
    ax.set_xticks(x + 0.1, labels)
    ax.set(xlabel="layer replaced", ylabel="Δ loss (nats/token)", title=f"causal check ({last})")
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=6)


def plot(rows: list[dict], causal: list[dict], path: Path, title: str = "") -> Path:
    """Draw the study's figure to ``path`` and return it.

    Three panels: R² and predictable fraction by layer (last checkpoint), predictable fraction
    over training per layer, causal loss change per layer. Solid: without the first token;
    dashed: all tokens.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lay = [r for r in rows if r["head"] is None]
    cks = list(dict.fromkeys((r["checkpoint"], r["step"]) for r in lay))
    last = cks[-1][0]
    n_layers = max(r["layer"] for r in lay) + 1
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    _by_layer_panel(axes[0], lay, last, n_layers)
    _over_training_panel(axes[1], lay, cks, n_layers)
    _causal_panel(axes[2], causal, last, n_layers)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
