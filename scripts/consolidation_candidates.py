"""Tabulate candidate fixes for consolidation on the shortcut-closed task (issue 28, item 2).

Each argument is ``NAME=RUN_DIR``: a run folder trained with ``cram train`` (any settings). The
table has one row per run, read from its metrics.csv, patterns.csv and config.json (with
``--eval-sequences N``, the final columns of a finished run from its last checkpoint on N
held-out sequences; a run stopped early keeps its last logged row):

- the final library / novel accuracy, library-query attention, attention per token, library
  accuracy with the semantic output zeroed and with every layer forced to working (or semantic)
  memory;
- ``attention_acc_library``: the best library accuracy while attention still answered library
  queries (library-query attention >= 0.9): what the episodic path itself gives the library,
  the ceiling of what consolidation can copy from it;
- ``leaving_dip``: the best library accuracy while attention answered library queries minus
  the lowest logged one from then until library-query attention first reads <= 0.05: how far
  library accuracy fell *while attention left* (the issue asks for <= 0.05);
- ``dip``, ``dip_step``: the same best minus the lowest logged library accuracy at any step
  after attention left, and that step (a fall long after the hand-over shows here, not above);
- ``bindings_left``, ``handover_dip``: per binding (patterns.csv), how many library bindings
  left attention for good, and how far their accuracy fell when they did (below);
- ``settings``: the config fields that differ from the run's preset and variant.

    python scripts/consolidation_candidates.py baseline=runs/c/base raw1=runs/c/raw1
        --title "..." --results results [--handover docs/img/handover.png]

``--reuse RESULT.json`` takes the final columns of a run from an earlier result file of this
script when its row there names the same folder, step and ``--eval-sequences`` (a finished
run's checkpoint does not change, so the evaluation is the same; it saves minutes per run).

``--handover PNG`` draws, per run, library accuracy against the steps since attention left each
binding (patterns.csv, folders from 2026-12-07 on): a binding *leaves* at the first logged step
after the last one where at least half of its queries attended. The curve is the mean over the
bindings that left, weighted by their queries; a dip right of 0 is what leaving cost.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

#: held-out evaluation seed of ``--eval-sequences`` (training logs use ``train.eval_seed``)
HELD_OUT_SEED = 20_000

COLUMNS = ["candidate", "seed", "steps", "eval_sequences", "attention_tokens", "library_acc",
           "novel_acc", "attention_library",
           "library_semantic_zeroed", "library_working_only", "library_semantic_only",
           "attention_acc_library", "leaving_dip", "dip", "dip_step", "bindings_left",
           "handover_dip", "settings"]
#: final column → its name in a metrics.csv row and in ``final_eval`` (``--reuse`` copies these
#: and ``steps`` / ``eval_sequences``)
FINAL = {"attention_tokens": "attention_tokens", "library_acc": "retrieval_acc_library",
         "novel_acc": "retrieval_acc_novel", "attention_library": "attention_library",
         "library_semantic_zeroed": "acc_library_semantic_zeroed",
         "library_working_only": "acc_library_working_only",
         "library_semantic_only": "acc_library_semantic_only"}
#: library-query attention at or above which attention answers library queries, and at or
#: below which it has left them
ATTENDING, LEFT = 0.9, 0.05


def settings(run: Path) -> str:
    """``section.field=value`` of every config field that differs from the preset's variant."""
    from cram.consolidation.config import PRESETS, resolve
    from cram.core.identity import RETIRED_FIELDS

    saved = json.loads((run / "config.json").read_text())
    if saved["preset"] not in PRESETS:  # trained from a config built in Python: no baseline
        return f"(preset {saved['preset']})"
    base = json.loads(json.dumps(resolve(saved["model"], saved["preset"]).to_dict()))
    out = []
    for section, key in (("data", "data"), ("model", "model_config"), ("train", "train")):
        for name, value in saved[key].items():
            if name not in base[key] and (not value or RETIRED_FIELDS.get(f"{key}.{name}")
                                          == value):
                continue  # a field this version no longer has, at its off value
            if base[key].get(name) != value and name != "steps":
                out.append(f"{section}.{name}={value}")
    return " ".join(out)


def final_eval(run: Path, sequences: int, seed: int = HELD_OUT_SEED) -> pd.Series:
    """The run's last checkpoint evaluated on ``sequences`` fresh sequences (hard routing).

    The same metrics as a metrics.csv row, on a larger set drawn with another seed than the
    training log's: at 64 sequences (about 250 novel queries) one query moves novel accuracy
    by 0.004, too coarse for a 0.99 target.
    """
    from cram.consolidation.api import evaluate_run

    doc = evaluate_run(run, [f"train.eval_sequences={sequences}", f"train.eval_seed={seed}",
                             "train.threads=1"])
    return pd.Series({k: v for k, v in doc.items() if k not in ("run", "task", "data")})


def row(name: str, run: Path, eval_sequences: int = 0, reuse: dict | None = None) -> dict:
    """One table row; ``reuse`` maps a run folder to an earlier row with its final columns."""
    m = pd.read_csv(run / "metrics.csv")
    finished = json.loads((run / "meta.json").read_text()).get("status") == "finished"
    eval_sequences = eval_sequences if finished else 0  # a stopped run: its last logged row
    saved = json.loads((run / "config.json").read_text())
    earlier = (reuse or {}).get(str(run))
    if earlier and earlier["eval_sequences"] == eval_sequences \
            and earlier["steps"] == int(m["step"].iloc[-1]):
        final = {k: earlier[k] for k in ("steps", "eval_sequences", *FINAL)}
    else:
        last = final_eval(run, eval_sequences) if eval_sequences else m.iloc[-1]
        final = {"steps": int(last["step"]),
                 "eval_sequences": eval_sequences or saved["train"]["eval_sequences"],
                 **{k: float(last.get(name, float("nan"))) for k, name in FINAL.items()}}
    return {"candidate": name, "seed": saved["seed"], **final, **dips(m),
            **handover_summary(run), "settings": settings(run), "run": str(run)}


def dips(m: pd.DataFrame) -> dict:
    """How far logged library accuracy fell below its best with attention, while and after leaving.

    ``m``: a metrics.csv table. Attention *left* at the first row after the last one where
    library-query attention was >= ``ATTENDING``; the hand-over ends at the first row after that
    where it is <= ``LEFT`` (or at the last row if it never is).
    """
    attending = m[m["attention_library"] >= ATTENDING]
    nan = float("nan")
    if attending.empty:
        return {"attention_acc_library": nan, "leaving_dip": nan, "dip": nan, "dip_step": None}
    best = float(attending["retrieval_acc_library"].max())
    after = m[m["step"] > attending["step"].max()]
    if after.empty:  # attention never left library queries
        return {"attention_acc_library": best, "leaving_dip": nan, "dip": nan, "dip_step": None}
    left = after[after["attention_library"] <= LEFT]
    leaving = after[after["step"] <= left["step"].min()] if len(left) else after
    lowest = after.loc[after["retrieval_acc_library"].idxmin()]
    return {"attention_acc_library": best,
            "leaving_dip": best - float(leaving["retrieval_acc_library"].min()),
            "dip": best - float(lowest["retrieval_acc_library"]), "dip_step": int(lowest["step"])}


def handover(run: Path) -> pd.DataFrame | None:
    """Per binding that left attention: its accuracy at each step relative to leaving.

    Columns: pattern, since (steps since it left; negative before), accuracy, n_queries,
    episodic_share. Empty when no binding left; None when patterns.csv has no accuracy column
    (folders written before 2026-12-07).
    """
    pat = pd.read_csv(run / "patterns.csv")
    if "accuracy" not in pat.columns:
        return None
    parts = []
    for _, g in pat.sort_values("step").groupby("pattern"):
        attending = g[g["episodic_share"] >= 0.5]
        after = g[g["step"] > (attending["step"].max() if len(attending) else -1)]
        if len(attending) and len(after):  # it attended once and left for good
            parts.append(g.assign(since=g["step"] - after["step"].min()))
    return pd.concat(parts) if parts else pd.DataFrame()


def handover_summary(run: Path, window: int = 300) -> dict:
    """Bindings that left attention for good, and how far their accuracy fell on leaving.

    ``handover_dip``: the best of the aligned curve in the ``window`` steps before leaving minus
    its lowest in the ``window`` steps after (NaN for folders without per-binding accuracy).
    """
    h = handover(run)
    if h is None or h.empty:
        return {"bindings_left": None if h is None else 0, "handover_dip": float("nan")}
    curve = aligned(h)["accuracy"]
    before, after = curve[(curve.index >= -window) & (curve.index < 0)], \
        curve[(curve.index >= 0) & (curve.index <= window)]
    return {"bindings_left": int(h["pattern"].nunique()),
            "handover_dip": float(before.max() - after.min())}


def aligned(h: pd.DataFrame) -> pd.DataFrame:
    """Query-weighted mean accuracy and attention per step since leaving, over bindings."""
    h = h.assign(correct=h["accuracy"] * h["n_queries"],
                 attending=h["episodic_share"] * h["n_queries"])
    g = h.groupby("since")[["correct", "attending", "n_queries"]].sum()
    return pd.DataFrame({"accuracy": g["correct"] / g["n_queries"],
                         "episodic_share": g["attending"] / g["n_queries"],
                         "bindings": h.groupby("since")["pattern"].nunique()})


def plot_handover(runs: list[tuple[str, Path]], png: Path, window: int = 600) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc_ax, att_ax) = plt.subplots(1, 2, figsize=(12, 6), sharex=True)
    names = list(dict.fromkeys(name for name, _ in runs))
    colors = plt.cm.tab10.colors  # one color per candidate name, one line per run
    labelled = set()
    for name, run in runs:
        h = handover(run)
        if h is None or h.empty:
            continue
        curve = aligned(h)
        curve = curve[(curve.index >= -window) & (curve.index <= window)]
        style = {"marker": ".", "lw": 1, "alpha": 0.8,
                 "color": colors[names.index(name) % len(colors)],
                 "label": None if name in labelled else name}
        labelled.add(name)
        acc_ax.plot(curve.index, curve["accuracy"], **style)
        att_ax.plot(curve.index, curve["episodic_share"], **style)
    for ax, what in ((acc_ax, "library accuracy"), (att_ax, "share of queries attending")):
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_xlabel("steps since the binding left attention")
        ax.set_ylabel(what)
        ax.set_ylim(0, 1.02)
    acc_ax.set_title("Each binding's accuracy around its hand-over (mean over bindings)")
    fig.legend(*acc_ax.get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


def plot_curves(runs: list[tuple[str, Path]], png: Path) -> None:
    """Per run, against step: library accuracy, library-query attention and novel accuracy.

    Every logged row (metrics.csv, 64 sequences), one line per run, one color per candidate
    name: the per-step curve that shows whether library accuracy dips while attention leaves.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), sharex=True)
    names = list(dict.fromkeys(name for name, _ in runs))
    colors = plt.cm.tab10.colors
    for name, run in runs:
        m = pd.read_csv(run / "metrics.csv")
        color = colors[names.index(name) % len(colors)]
        for ax, column in zip(axes, ("retrieval_acc_library", "attention_library",
                                     "retrieval_acc_novel")):
            ax.plot(m["step"], m[column], color=color, lw=1, alpha=0.8,
                    label=name if run == next(r for n, r in runs if n == name) else None)
    titles = ("library accuracy", "share of library queries attending", "novel accuracy")
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel("training step")
        ax.set_ylim(0, 1.02)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="NAME=RUN_DIR")
    ap.add_argument("--title", required=True)
    ap.add_argument("--notes", default="")
    ap.add_argument("--results", default="results")
    ap.add_argument("--eval-sequences", type=int, default=0,
                    help="final columns from the last checkpoint on this many held-out sequences "
                         "(default: the last metrics.csv row)")
    ap.add_argument("--reuse", type=Path, help="an earlier result file of this script: final "
                    "columns of the runs it holds at the same step and --eval-sequences")
    ap.add_argument("--handover", type=Path, help="also draw the per-binding hand-over figure")
    ap.add_argument("--curves", type=Path, help="also draw every run's per-step library and "
                    "novel accuracy and library-query attention")
    args = ap.parse_args()

    from cram.core.benchlog import git_commit, load_line, machine_line, utc_now
    from cram.core.results import ResultFile, study_id, write_result

    reuse = ({r["run"]: r for r in json.loads(args.reuse.read_text())["rows"]}
             if args.reuse else None)
    rows = []
    for spec in args.runs:
        name, _, path = spec.partition("=")
        rows.append(row(name, Path(path), args.eval_sequences, reuse))
    commit, _ = git_commit()
    result = ResultFile(
        study=study_id(args.title), title=args.title, command=" ".join(["python", *sys.argv]),
        machine=machine_line(), load=load_line(), commit=commit, date=utc_now(),
        columns=COLUMNS, rows=rows, seeds=sorted({r["seed"] for r in rows}),
        notes=args.notes or __doc__.split("\n\n")[1])
    print(write_result(result, args.results))
    if args.handover:
        plot_handover([(spec.partition("=")[0], Path(spec.partition("=")[2]))
                       for spec in args.runs], args.handover)
    if args.curves:
        plot_curves([(spec.partition("=")[0], Path(spec.partition("=")[2]))
                     for spec in args.runs], args.curves)
    print(pd.DataFrame(rows)[COLUMNS].to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
