"""Figures and a markdown report of consolidation runs (read-only: works from run folders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_attention(runs, path: str | Path, title: str = "Attention use over training"):
    """Attention fraction, familiarity q̂ and accuracy against step, transition and q̂ rise marked.

    ``runs`` are ``cram.core.runs.Run`` objects (one line style per series, one colour per run).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.4))
    palette = sns.color_palette("deep", max(len(runs), 1))
    for colour, run in zip(palette, runs):
        m = run.metrics
        label = f"{run.model} seed {run.seed}"
        axes[0].plot(m["step"], m["attention_library"], color=colour, lw=2,
                     label=f"{label}: library queries")
        axes[0].plot(m["step"], m["attention_novel"], color=colour, lw=1.5, ls="--",
                     label=f"{label}: novel queries")
        axes[0].plot(m["step"], m["attention_fraction"], color=colour, lw=1, ls=":",
                     label=f"{label}: all (token, layer) pairs")
        if "qhat_library" in m:
            axes[1].plot(m["step"], m["qhat_library"], color=colour, lw=2,
                         label=f"{label}: q̂ library queries")
            axes[1].plot(m["step"], m["qhat_novel"], color=colour, lw=1.5, ls="--",
                         label=f"{label}: q̂ novel queries")
        axes[2].plot(m["step"], m["retrieval_acc_library"], color=colour, lw=2,
                     label=f"{label}: library")
        axes[2].plot(m["step"], m["retrieval_acc_novel"], color=colour, lw=1.5, ls="--",
                     label=f"{label}: novel")
        tr = run.transition or {}
        if tr.get("step") is not None:
            axes[0].axvline(tr["step"], color=colour, lw=1, alpha=0.7)
            if tr.get("low") is not None:
                axes[0].axvspan(tr["low"], tr["high"], color=colour, alpha=0.12)
        if run.familiarity_rise_step is not None:
            axes[1].axvline(run.familiarity_rise_step, color=colour, lw=1, alpha=0.7)
        if run.warmup_steps:
            for ax in axes:
                ax.axvline(run.warmup_steps, color="grey", lw=0.8, ls="-.")
    axes[0].set(xlabel="training step", ylabel="share that reads episodic memory",
                ylim=(-0.02, 1.02), title=title)
    axes[1].set(xlabel="training step", ylabel="familiarity q̂ (mean over layers)",
                ylim=(-0.02, 1.02), title="Familiarity (vertical line: change point of its rise)")
    axes[2].set(xlabel="training step", ylabel="retrieval accuracy", ylim=(-0.02, 1.02),
                title="Retrieval accuracy (hard routing)")
    axes[0].legend(fontsize=7, loc="center right")
    axes[1].legend(fontsize=7, loc="upper left")
    axes[2].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary_rows(runs) -> list[dict]:
    """One row per run with its final metrics, transition and timing."""
    rows = []
    for run in runs:
        last = run.metrics.iloc[-1]
        tr = run.transition or {}
        rows.append({
            "run": run.name, "model": run.model, "seed": run.seed, "step": int(last["step"]),
            "acc_library": float(last["retrieval_acc_library"]),
            "acc_novel": float(last["retrieval_acc_novel"]),
            "attention_all": float(last["attention_fraction"]),
            # the paper's unit: tokens any layer sends to attention (attention_all is per pair)
            "attention_tokens": float(last.get("attention_tokens", np.nan)),
            "attention_library": float(last["attention_library"]),
            "attention_novel": float(last["attention_novel"]),
            "dynamics_mse": float(last["dynamics_mse"]),
            # issue 13: where warm-up ended and why (a learned schedule's criterion or max wait)
            "warmup_end": run.warmup_steps,
            "warmup_ended_by": (tr.get("schedule") or {}).get("fired_by", "fixed"),
            "transition_step": tr.get("step"),
            "transition_90ci": (f"[{tr['low']:.0f}, {tr['high']:.0f}]"
                                if tr.get("low") is not None else ""),
            "familiarity_rise_step": run.familiarity_rise_step,
            "lag_after_familiarity": tr.get("lag_after_familiarity"),
            "train_seconds": float(run.meta.get("train_seconds", np.nan)),
        })
    return rows
