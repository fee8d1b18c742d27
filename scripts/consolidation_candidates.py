"""Tabulate candidate fixes for consolidation on the shortcut-closed task (issue 28, item 2).

Each argument is ``NAME=RUN_DIR``: a run folder trained with ``cram train`` (any settings). The
table has one row per run, read from its metrics.csv and config.json only:

- the final library / novel accuracy, library-query attention, library accuracy with the
  semantic output zeroed and with every layer forced to working (or semantic) memory;
- ``attention_acc_library``: the best library accuracy while attention still answered library
  queries (library-query attention >= 0.9): what the episodic path itself gives the library,
  the ceiling of what consolidation can copy from it;
- ``dip``: the best library accuracy before attention left minus the lowest one after it (how
  far library accuracy fell while attention left; the issue asks for <= 0.05);
- ``settings``: the config fields that differ from the run's preset and variant.

    python scripts/consolidation_candidates.py baseline=runs/c/base raw1=runs/c/raw1
        --title "..." --results results
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

COLUMNS = ["candidate", "seed", "steps", "library_acc", "novel_acc", "attention_library",
           "library_semantic_zeroed", "library_working_only", "library_semantic_only",
           "attention_acc_library", "dip", "settings"]


def settings(run: Path) -> str:
    """``section.field=value`` of every config field that differs from the preset's variant."""
    from cram.consolidation.config import resolve

    saved = json.loads((run / "config.json").read_text())
    base = json.loads(json.dumps(resolve(saved["model"], saved["preset"]).to_dict()))
    out = []
    for section, key in (("data", "data"), ("model", "model_config"), ("train", "train")):
        for name, value in saved[key].items():
            if base[key].get(name) != value and name != "steps":
                out.append(f"{section}.{name}={value}")
    return " ".join(out)


def row(name: str, run: Path) -> dict:
    m = pd.read_csv(run / "metrics.csv")
    last = m.iloc[-1]
    attending = m[m["attention_library"] >= 0.9]
    best = float(attending["retrieval_acc_library"].max()) if len(attending) else float("nan")
    after = m[m["step"] > (attending["step"].max() if len(attending) else -1)]
    low = float(after["retrieval_acc_library"].min()) if len(after) else float("nan")
    saved = json.loads((run / "config.json").read_text())
    return {"candidate": name, "seed": saved["seed"], "steps": int(last["step"]),
            "library_acc": float(last["retrieval_acc_library"]),
            "novel_acc": float(last["retrieval_acc_novel"]),
            "attention_library": float(last["attention_library"]),
            "library_semantic_zeroed": float(last["acc_library_semantic_zeroed"]),
            "library_working_only": float(last["acc_library_working_only"]),
            "library_semantic_only": float(last["acc_library_semantic_only"]),
            "attention_acc_library": best, "dip": best - low, "settings": settings(run),
            "run": str(run)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="NAME=RUN_DIR")
    ap.add_argument("--title", required=True)
    ap.add_argument("--notes", default="")
    ap.add_argument("--results", default="results")
    args = ap.parse_args()

    from cram.core.benchlog import git_commit, load_line, machine_line, utc_now
    from cram.core.results import ResultFile, study_id, write_result

    rows = []
    for spec in args.runs:
        name, _, path = spec.partition("=")
        rows.append(row(name, Path(path)))
    commit, _ = git_commit()
    result = ResultFile(
        study=study_id(args.title), title=args.title, command=" ".join(["python", *sys.argv]),
        machine=machine_line(), load=load_line(), commit=commit, date=utc_now(),
        columns=COLUMNS, rows=rows, seeds=sorted({r["seed"] for r in rows}),
        notes=args.notes or __doc__.split("\n\n")[1])
    print(write_result(result, args.results))
    print(pd.DataFrame(rows)[COLUMNS].to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
