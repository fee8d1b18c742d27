"""Evaluate trained CRAM runs at fixed attention budgets: what each answers at the same compute.

Each argument is ``NAME=RUN_DIR`` (a run folder trained with ``cram train``, a model of the CRAM
family). Every run's last checkpoint is evaluated on the same held-out sequences once per
``--budgets`` share: in each layer at most that share of an evaluation batch's tokens read
attention, the ones the router's own scores rank highest (``cram eval --attention-budget``;
1.0 is no cap). The table has one row per (run, budget):

- ``attention_tokens``: the share of tokens that attended in any layer, as spent;
- ``library_acc``, ``novel_acc``, ``attention_library``, ``attention_novel``: accuracy and the
  share of queries that attended, library and novel;
- ``library_unattended``, ``novel_unattended``: accuracy at the queries no layer attended, i.e.
  what the model answers *without* attention once the budget is spent;
- ``library_semantic_zeroed``: library accuracy under the same cap with the semantic output
  zeroed.

This is how a model that keeps attention on the library (the control trained without the
consolidation loss) is compared with one that consolidated it at the same compute.

``--routes-of NAME`` adds one row per other run: that run routed by the hard choices of the run
called NAME with the same seed, on the same batches (``cram eval --routes-of``), so the same
tokens attend in every layer and only the weights differ (``routes`` names the source; ``own``
on the budget rows, whose ``budget`` is NaN on these).

``--reuse RESULT.json`` copies a row from an earlier result file of this script when it names the
same run folder, budget (or routes), ``--eval-sequences`` and last logged step: a finished run's
checkpoint does not change, so neither does its evaluation. Run folders are local data that a
new checkout does not have, so this is how seeds trained in different sessions meet in one table.

    python scripts/attention_budget.py default=runs/d/s0 control=runs/c/s0
        --budgets 1.0 0.0225 0.015 --routes-of default --title "..." --results results
        [--figure docs/img/b.png]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

#: held-out evaluation seed (the training log uses ``train.eval_seed``)
HELD_OUT_SEED = 20_000

#: result column → its name in ``cram eval``'s metrics
METRICS = {"attention_tokens": "attention_tokens", "library_acc": "retrieval_acc_library",
           "novel_acc": "retrieval_acc_novel", "attention_library": "attention_library",
           "attention_novel": "attention_novel", "library_unattended": "acc_library_unattended",
           "novel_unattended": "acc_novel_unattended",
           "library_semantic_zeroed": "acc_library_semantic_zeroed"}
COLUMNS = ["candidate", "seed", "step", "budget", "routes", *METRICS, "eval_sequences", "run"]


def run_seed(run: Path) -> int:
    """The training seed recorded in a run folder's config.json."""
    from cram.core.runs import CONFIG_FILE, read_json

    return read_json(run / CONFIG_FILE)["seed"]


def budget_row(name: str, run: Path, budget: float | None, sequences: int,
               seed: int = HELD_OUT_SEED, routes_of: tuple[str, Path] | None = None) -> dict:
    """One run's last checkpoint on ``sequences`` held-out sequences at ``budget``.

    ``routes_of`` (NAME, RUN_DIR) instead of a budget: routed by that run's hard choices.
    """
    from cram.consolidation.api import evaluate_run

    doc = evaluate_run(run, [f"train.eval_sequences={sequences}", f"train.eval_seed={seed}",
                             "train.threads=1"], attention_budget=budget,
                       routes_of=None if routes_of is None else routes_of[1])
    return {"candidate": name, "seed": run_seed(run), "step": doc["step"],
            "budget": float("nan") if budget is None else budget,
            "routes": routes_label(routes_of),
            **{k: float(doc.get(m, float("nan"))) for k, m in METRICS.items()},
            "eval_sequences": sequences, "run": str(run)}


def routes_label(routes_of: tuple[str, Path] | None) -> str:
    """``own``, or the name and seed of the run whose choices route this one."""
    return "own" if routes_of is None else f"{routes_of[0]} seed {run_seed(routes_of[1])}"


def row_key(run: Path | str, budget: float | None, routes: str, sequences: int) -> tuple:
    """What makes two evaluations the same (with the run's step, checked apart)."""
    budget = None if budget is None or math.isnan(budget) else round(float(budget), 9)
    return str(run), budget, routes, int(sequences)


def reusable_rows(result_json: Path) -> dict[tuple, dict]:
    """An earlier result file's rows by ``row_key``; its non-finite strings become floats again.

    Rows without ``eval_sequences`` (files written before it was a column) are left out.
    """
    from cram.core.results import read_result

    decoded = ({k: float(v) if v in ("nan", "inf", "-inf") else v for k, v in r.items()}
               for r in read_result(result_json).rows)
    return {row_key(r["run"], r["budget"], r["routes"], r["eval_sequences"]): r
            for r in decoded if r.get("eval_sequences") is not None}


def last_logged_step(run: Path) -> int:
    """The step of a run folder's last metrics.csv row."""
    return int(pd.read_csv(run / "metrics.csv")["step"].iloc[-1])


def evaluated_row(name: str, run: Path, budget: float | None, sequences: int,
                  routes_of: tuple[str, Path] | None, reuse: dict[tuple, dict]) -> dict:
    """``budget_row``, or the row ``reuse`` holds for the same evaluation at the same step."""
    earlier = reuse.get(row_key(run, budget, routes_label(routes_of), sequences))
    if earlier is not None and earlier["step"] == last_logged_step(run):
        return {**earlier, "candidate": name}
    return budget_row(name, run, budget, sequences, routes_of=routes_of)


def given_route_jobs(runs: list[tuple[str, Path]], reference: str
                     ) -> list[tuple[str, Path, tuple[str, Path]]]:
    """(name, run, (reference, its run)) for every run not named ``reference``, same seed."""
    sources = {run_seed(run): run for name, run in runs if name == reference}
    if not sources:
        raise SystemExit(f"--routes-of {reference}: no run has that name")
    return [(name, run, (reference, sources[run_seed(run)])) for name, run in runs
            if name != reference and run_seed(run) in sources]


def plot(table: pd.DataFrame, png: Path, marks: tuple[float, ...] = ()) -> None:
    """Library and novel accuracy against attention spent, one line per run, coloured by name.

    The middle panel (accuracy at unattended library queries) leaves out rows where more than
    90% of library queries attended: too few are left to read. ``marks``: shares of tokens drawn
    as dotted vertical lines (a task's floor, a target).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), sharex=True)
    names = list(dict.fromkeys(table["candidate"]))
    colors = plt.cm.tab10.colors
    given = table[table["routes"] != "own"]
    for ax, column in zip(axes, ("library_acc", "library_unattended", "novel_acc")):
        for name, g in given.groupby("candidate", sort=False):
            ax.plot(100 * g["attention_tokens"], g[column], "*", ms=11, mec="black", mew=0.6,
                    color=colors[names.index(name) % len(colors)],
                    label=f"{name}, routed as {g['routes'].iloc[0].rsplit(' seed', 1)[0]}")
    for (name, _), g in table[table["routes"] == "own"].groupby(["candidate", "run"],
                                                                 sort=False):
        g = g.sort_values("attention_tokens")
        color = colors[names.index(name) % len(colors)]
        readable = g[g["attention_library"] <= 0.9]
        for ax, rows, column in zip(axes, (g, readable, g),
                                    ("library_acc", "library_unattended", "novel_acc")):
            ax.plot(100 * rows["attention_tokens"], rows[column], "o-", color=color, lw=1, ms=3,
                    alpha=0.8, label=name)
    titles = ("library accuracy", "library accuracy at queries no layer attended",
              "novel accuracy")
    for ax, title in zip(axes, titles):
        for mark in marks:
            ax.axvline(100 * mark, color="grey", ls=":", lw=1)
        ax.set_title(title)
        ax.set_xlabel("attention spent (% of tokens, any layer)")
        ax.set_ylim(0, 1.02)
    handles, labels = axes[0].get_legend_handles_labels()
    keep = {label: h for h, label in zip(handles, labels)}
    axes[0].legend(keep.values(), keep.keys(), fontsize=8, loc="center left")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="NAME=RUN_DIR")
    ap.add_argument("--budgets", type=float, nargs="+", required=True,
                    help="shares of tokens that may attend in each layer (1.0: no cap)")
    ap.add_argument("--eval-sequences", type=int, default=512)
    ap.add_argument("--title", required=True)
    ap.add_argument("--notes", default="")
    ap.add_argument("--results", default="results")
    ap.add_argument("--figure", type=Path, help="also draw accuracy against attention spent")
    ap.add_argument("--marks", type=float, nargs="*", default=(),
                    help="shares of tokens marked on the figure (e.g. a floor and a target)")
    ap.add_argument("--routes-of", metavar="NAME", default=None,
                    help="also route every other run by the run called NAME with its seed")
    ap.add_argument("--reuse", type=Path, action="append", default=[],
                    help="an earlier result file of this script: its rows of the same runs, "
                         "budgets and --eval-sequences at the same step (repeatable)")
    args = ap.parse_args()

    from tqdm import tqdm

    from cram.core.benchlog import git_commit, load_line, machine_line, utc_now
    from cram.core.results import ResultFile, study_id, write_result

    runs = [(spec.partition("=")[0], Path(spec.partition("=")[2])) for spec in args.runs]
    jobs = [(name, run, b, None) for name, run in runs for b in args.budgets]
    if args.routes_of:
        jobs += [(name, run, None, ref) for name, run, ref in given_route_jobs(runs,
                                                                                args.routes_of)]
    reuse = {key: row for path in args.reuse for key, row in reusable_rows(path).items()}
    rows = [evaluated_row(name, run, b, args.eval_sequences, ref, reuse)
            for name, run, b, ref in tqdm(jobs, desc="runs x budgets")]
    commit, _ = git_commit()
    result = ResultFile(
        study=study_id(args.title), title=args.title, command=" ".join(["python", *sys.argv]),
        machine=machine_line(), load=load_line(), commit=commit, date=utc_now(),
        columns=COLUMNS, rows=rows, seeds=sorted({r["seed"] for r in rows}),
        notes=args.notes or __doc__.split("\n\n")[1])
    print(write_result(result, args.results))
    table = pd.DataFrame(rows)
    if args.figure:
        plot(table, args.figure, tuple(args.marks))
    print(table[COLUMNS[:-1]].to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
