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


# -- the demo report in words -------------------------------------------------------------------
# The functions below turn one run folder into sentences: when library-query attention fell and
# what came before it, which memory tier the library answers depend on, and the run table with a
# definition for every column. They read run folders only (cram.core.runs.Run objects).

#: a forced-tier library accuracy at or above this counts as "answers library queries"
TIER_ANSWERS = 0.9

#: the run table of the demo report: column → what it means
RUN_COLUMNS = {
    "run": "the run folder (model and seed)",
    "step": "the last evaluated training step",
    "accuracy library / novel": "share of library / novel queries answered correctly at the "
                                "hard-routed evaluation (chance: one over the number of values, "
                                "1/32 at the demo preset)",
    "attention library / novel": "share of library / novel queries for which at least one layer "
                                 "reads episodic memory (attention)",
    "attention pairs / tokens": "share of (token, layer) pairs that read episodic memory / share "
                                "of tokens that any layer sends to it",
    "dynamics MSE": "mean squared error of the next-signal prediction (1.0 = always predicting "
                    "the mean of the standardised signal)",
    "warm-up end": "the step at which routing stopped being forced to episodic memory, and what "
                   "ended it (criterion: the retrieval criterion was met; max_wait: the longest "
                   "allowed wait ran out; fixed: a preset step count)",
    "transition": "change point of library-query attention after warm-up (none: no fall found)",
    "familiarity rise": "change point of the familiarity estimate q̂ on library queries minus "
                        "q̂ on novel ones (none: no rise found)",
    "train s": "wall-clock seconds of training, evaluation excluded",
}


def _last(run, column: str) -> float | None:
    """The last finite value of ``column`` in the run's metrics (None when there is none)."""
    m = run.metrics
    if column not in m:
        return None
    values = m[column].dropna()
    return float(values.iloc[-1]) if len(values) else None


def _first(run, *columns: str) -> float | None:
    """The last value of the first of ``columns`` that the run logs."""
    for column in columns:
        value = _last(run, column)
        if value is not None:
            return value
    return None


def _steps(value) -> str:
    return "none" if value is None else f"{value:.0f}"


def _train_steps(run) -> int:
    """The run's configured step count (its last logged step when the config lacks it)."""
    steps = (run.config.get("train") or {}).get("steps")
    return int(steps) if isinstance(steps, int) else int(run.metrics["step"].iloc[-1])


def report_rows(runs) -> list[dict]:
    """The demo report's run table: the columns of :data:`RUN_COLUMNS`, formatted as text."""
    rows = []
    for s in summary_rows(runs):
        rows.append({
            "run": s["run"], "step": s["step"],
            "accuracy library / novel": f"{s['acc_library']:.3f} / {s['acc_novel']:.3f}",
            "attention library / novel": (f"{s['attention_library']:.3f} / "
                                          f"{s['attention_novel']:.3f}"),
            "attention pairs / tokens": (f"{s['attention_all']:.2%} / "
                                         + ("n/a" if np.isnan(s["attention_tokens"])
                                            else f"{s['attention_tokens']:.2%}")),
            "dynamics MSE": f"{s['dynamics_mse']:.3f}",
            "warm-up end": f"{s['warmup_end']} ({s['warmup_ended_by']})",
            "transition": _steps(s["transition_step"]),
            "familiarity rise": _steps(s["familiarity_rise_step"]),
            "train s": f"{s['train_seconds']:.0f}",
        })
    return rows


def legend(columns: dict[str, str]) -> str:
    """A markdown list defining each column of a table."""
    return "".join(f"- **{name}**: {meaning}.\n" for name, meaning in columns.items())


def change_point_text(transition: dict, resolution: float | None) -> str:
    """``at step S`` with its interval, or with the log resolution when the interval is one point.

    A bootstrap interval like [350, 350] means the resampled fits all chose the same evaluation:
    the series gives no spread finer than one evaluation interval, so that is what is stated.
    """
    step, low, high = transition["step"], transition.get("low"), transition.get("high")
    every = (f"one evaluation every {resolution:.0f} steps" if resolution
             else "the evaluation interval")
    if low is None or high is None or low == high:
        return f"at step {step:.0f} (resolution: {every})"
    level = transition.get("level") or 0.9
    return (f"at step {step:.0f} ({level:.0%} bootstrap interval {low:.0f}-{high:.0f}; "
            f"{every})")


def resume_hint(run) -> str | None:
    """What to do when a routed run has no transition (None when it has one or is not routed).

    Library-query attention with no change point after warm-up means that either the run ended
    before its transition or the model never leaves attention; training longer tells which.
    """
    tr = run.transition
    if not isinstance(tr, dict) or tr.get("step") is not None \
            or tr.get("method") == "not a routed model":
        return None
    steps = _train_steps(run)
    return (f"no transition: library-query attention has no change point after warm-up "
            f"(step {run.warmup_steps}), so this run ended before its transition (or its model "
            f"never leaves attention); train longer with "
            f"`cram train --out {run.path} --resume --steps {2 * steps}`")


def _warmup_text(run) -> str:
    """Where warm-up ended and why, as a sentence."""
    schedule = (run.transition or {}).get("schedule") or {}
    end, cause = run.warmup_steps, schedule.get("fired_by", "fixed")
    if cause == "criterion":
        why = ("when the retrieval criterion was met (attention answered "
               f"{schedule.get('threshold', 0.9):.0%} of the training queries that the model "
               "gets wrong without retrieval)")
    elif cause == "plateau":
        why = ("when the retrieval signal stopped rising below the threshold (attention had "
               f"learned to answer {schedule.get('signal_at_switch') or 0:.0%} of the training "
               "queries that the model gets wrong without retrieval, as far as this task let it)")
    elif cause == "max_wait":
        why = "because the longest allowed wait ran out before the retrieval criterion was met"
    else:
        why = "at the step count the preset fixes"
    return (f"Warm-up (every token forced to read episodic memory, so that attention learns to "
            f"retrieve) ended at step {end}, {why}.")


def _why_text(run, transition: dict) -> str:
    """Why library-query attention fell: the familiarity rise that preceded it, in words."""
    rise, lag = run.familiarity_rise_step, transition.get("lag_after_familiarity")
    lib = _first(run, "qhat_library_retrieving", "qhat_library")
    novel = _first(run, "qhat_novel_retrieving", "qhat_novel")
    where = (" in the layer that retrieves (the figure shows the mean over layers)"
             if _last(run, "qhat_library_retrieving") is not None else "")
    cost_gate = (run.config.get("train") or {}).get("cost_gate", "familiarity")
    charged = ("each query in proportion to q̂" if cost_gate in ("familiarity-queries",
                                                                 "replaceable")
               else "each token in proportion to q̂")
    gate = (f"The attention cost charges {charged}, the model's own estimate "
            "that the semantic tier already says what attention would retrieve, so a query "
            "leaves attention only once q̂ marks it as familiar."
            + (" Tokens that are not queries hold no binding and are charged in full."
               if charged.startswith("each query") else ""))
    if cost_gate == "none":
        gate = ("The attention cost is not gated by q̂ (cost_gate none): every token is charged "
                "the same, whatever the semantic tier holds.")
    if rise is None:
        return gate + " Here q̂ shows no rise on library queries over novel ones."
    order = (f"{lag:.0f} steps before the fall" if lag is not None and lag > 0
             else "at the same evaluation as the fall" if lag == 0
             else f"{-lag:.0f} steps after the fall" if lag is not None else "")
    ends = (f"; at the end q̂ is {lib:.2f} on library queries and {novel:.2f} on novel ones"
            f"{where}" if lib is not None and novel is not None else "")
    return (f"{gate} q̂ began to separate library from novel queries at step {rise:.0f}, "
            f"{order}{ends}. Novel queries, which q̂ does not mark, keep attending.")


def fall_answer(run) -> str:
    """One clause: when library-query attention fell in ``run`` (or that it did not)."""
    tr = run.transition or {}
    if tr.get("step") is None:
        return (f"not within its {_train_steps(run)} steps: the run ended before its "
                "transition")
    resolution = tr.get("resolution") or (run.config.get("train") or {}).get("log_every")
    return (f"{change_point_text(tr, resolution)}, {tr['step'] - run.warmup_steps:.0f} steps "
            "after warm-up ended")


def transition_text(run) -> str:
    """A paragraph: warm-up, when attention on library queries fell, and why."""
    tr = run.transition or {}
    text = _warmup_text(run)
    if tr.get("method") == "not a routed model":
        return text + " The model does not route, so it has no transition."
    before, after = tr.get("level_before"), tr.get("level_after")
    levels = (f", from {before:.2f} of library queries reading episodic memory before it to "
              f"{after:.2f} after" if before is not None and after is not None else "")
    if tr.get("step") is None:
        return (f"{text} Library-query attention did not fall within the run{levels}: "
                f"{resume_hint(run)}.")
    end_lib, end_novel = _last(run, "attention_library"), _last(run, "attention_novel")
    return (f"{text} Attention on library queries fell {fall_answer(run)}{levels}. At the last "
            f"evaluation {end_lib:.3f} of library queries and {end_novel:.3f} of novel queries "
            f"still read episodic memory. {_why_text(run, tr)}")


def _tier_verdict(acc: float, sem: float, work: float) -> str:
    """What the forced-tier library accuracies say about which tier the answers depend on."""
    sem_ok, work_ok = sem >= TIER_ANSWERS, work >= TIER_ANSWERS
    if sem_ok and work_ok:
        return ("Both are high, so the readout does not depend on one tier: the library answers "
                "are available without retrieval (the embeddings, feed-forward layers and readout "
                "learned them from the task loss; docs/cram.md calls this the readout shortcut). "
                "The fall of attention shows that the router learned library queries need no "
                "attention, not that the semantic tier took the answers over.")
    if sem_ok:
        return ("Only the semantic tier answers them without attention: the library answers "
                "depend on what the semantic tier holds.")
    if work_ok:
        return ("Working memory and the readout answer them without the semantic tier, which "
                "alone does not.")
    return (f"Neither tier alone answers them (library accuracy with attention: {acc:.3f}): "
            "library queries still need episodic memory.")


def tier_text(run) -> str:
    """A paragraph: which memory tier answers library queries, from the forced-tier accuracies."""
    acc = _last(run, "retrieval_acc_library")
    sem, work = _last(run, "acc_library_semantic_only"), _last(run, "acc_library_working_only")
    if sem is None or work is None or acc is None:
        return "This run does not log forced-tier accuracies, so no tier can be named."
    n_layers = int((run.config.get("model_config") or {}).get("n_layers", 0))
    shares = []
    for i in range(n_layers):
        w, e, s = (_last(run, f"share_{t}_l{i}") for t in ("working", "episodic", "semantic"))
        if None not in (w, e, s):
            shares.append(f"layer {i}: working {w:.1%}, episodic {e:.1%}, semantic {s:.1%}")
    share_text = (" Over all tokens (queries are a small minority), the router sends "
                  + "; ".join(shares) + "." if shares else "")
    return (f"Library accuracy is {acc:.3f} with the router's own choice, {sem:.3f} with every "
            f"layer forced to semantic memory and {work:.3f} with every layer forced to working "
            f"memory (no retrieval at all). {_tier_verdict(acc, sem, work)}{_zeroed_text(run)}"
            f"{share_text}")


def _zeroed_text(run) -> str:
    """One sentence: what zeroing the semantic tier's output does (the causal check), if logged."""
    lib, nov = _last(run, "acc_library_semantic_zeroed"), _last(run, "acc_novel_semantic_zeroed")
    if lib is None or nov is None:
        return ""
    n_values = (run.config.get("data") or {}).get("n_values")
    chance = (f" (chance is 1/{n_values} = {1 / n_values:.3f})"
              if isinstance(n_values, int) and n_values > 0 else "")
    return (f" Zeroing the semantic tier's output, with the router's choices kept, leaves library "
            f"accuracy at {lib:.3f}{chance} and novel accuracy at {nov:.3f}: "
            + ("the answers do not depend on what the semantic tier says." if lib >= 0.9 else
               "the library answers depend on it: they come from what consolidation wrote into "
               "the semantic tier."))
