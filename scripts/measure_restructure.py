"""Measure a restructuring: the same numbers before and after, and what changed in the tree.

Compares two checkouts of cram (``--before`` and ``--after``: git refs of this repository) and
two sets of run folders trained with them (``--before-runs``, ``--after-runs``: each holding
the same sub-folders, e.g. from ``scripts/golden_runs.sh``), and writes one result file (study
``one-data-path``):

- per run folder and table: equal or not, every column compared but the wall clock
  (``train_seconds``) and ``meta.json`` (dates, host);
- lines per folder (non-blank Python lines), at both refs;
- data-path branches: lines that ask which kind of data the trainer holds (``run.token``,
  ``is_token_task``, ``spec.is_token``), at both refs;
- configuration: fields of every ``*Config`` dataclass and the places a variant is written;
- CLI options: every option string of every ``cram`` verb (``--pkg-before``/``--pkg-after``:
  folders that import the two versions as ``cram``, e.g. built with ``scripts/golden_runs.sh``).

    python scripts/measure_restructure.py --before f31e5e9 --after HEAD
        --before-runs OUT/before --after-runs OUT/after
        --pkg-before OUT/before.pkg --pkg-after OUT/after.pkg --results results

    (after ``scripts/golden_runs.sh f31e5e9 OUT/before`` and ``scripts/golden_runs.sh HEAD
    OUT/after``)
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd

FOLDERS = ("cram/core", "cram/commands", "cram", "models", "kernels", "tasks", "consolidation",
           "experiments", "redundancy", "psych_data", "fitting", "apps")
BRANCH = re.compile(r"run\.token\b|is_token_task|\.is_token\b")
TABLES = ("metrics.csv", "patterns.csv", "retention.csv", "transition.json", "config.json")
CLI_COUNT = """
import argparse, json
from cram.cli import build_parser
def walk(p):
    n = sum(len([s for s in a.option_strings if s.startswith('--')]) for a in p._actions
            if a.option_strings and '--help' not in a.option_strings)
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            n += sum(walk(sp) for sp in set(a.choices.values()))
    return n
print(json.dumps(walk(build_parser())))
"""


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def python_files(ref: str) -> dict[str, str]:
    """Every tracked .py file at ``ref`` outside tests/, scripts/ and notebooks/: path → text."""
    names = [n for n in git("ls-tree", "-r", "--name-only", ref).split()
             if n.endswith(".py") and not n.startswith(("tests/", "scripts/", "notebooks/"))]
    return {n: git("show", f"{ref}:{n}") for n in names}


def line_counts(files: dict[str, str]) -> dict[str, int]:
    """Non-blank lines per folder (``cram``: its top-level modules only)."""
    out = {}
    for folder in FOLDERS:
        def inside(name: str) -> bool:
            if folder == "cram":
                return name.count("/") == 1 and name.startswith("cram/")
            return name.startswith(folder + "/")
        out[folder] = sum(sum(1 for ln in text.splitlines() if ln.strip())
                          for name, text in files.items() if inside(name))
    out["total"] = sum(v for k, v in out.items() if k not in ("cram/core", "cram/commands")) \
        + out["cram/core"] + out["cram/commands"]
    return out


def branches(files: dict[str, str]) -> list[str]:
    """``file:line`` of every line that asks which kind of data it holds."""
    return [f"{name}:{i}" for name, text in files.items()
            for i, ln in enumerate(text.splitlines(), 1)
            if BRANCH.search(ln) and not ln.lstrip().startswith("#")]


def config_fields(files: dict[str, str]) -> dict[str, int]:
    """Fields of each dataclass whose name ends in ``Config``."""
    out = {}
    for text in files.values():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Config") and any(
                    "dataclass" in ast.unparse(d) for d in node.decorator_list):
                out[node.name] = sum(isinstance(s, ast.AnnAssign) for s in node.body)
    return dict(sorted(out.items()))


def cli_options(pkg: str) -> int:
    """Option strings of every ``cram`` verb, importing ``cram`` from ``pkg``."""
    proc = subprocess.run([sys.executable, "-c", CLI_COUNT], capture_output=True, text=True,
                          check=True, env={**os.environ, "PYTHONPATH": pkg})
    return int(json.loads(proc.stdout))


def same_table(a: Path, b: Path) -> tuple[bool, str]:
    """Whether two run files hold the same numbers (CSV: all columns but ``train_seconds``)."""
    if not a.exists() or not b.exists():
        return a.exists() == b.exists(), "missing" if a.exists() != b.exists() else "absent"
    if a.suffix == ".csv":
        x, y = pd.read_csv(a), pd.read_csv(b)
        if list(x.columns) != list(y.columns) or len(x) != len(y):
            return False, "columns or rows differ"
        cols = [c for c in x.columns if c != "train_seconds"]
        diff = [c for c in cols if not x[c].equals(y[c])]
        return not diff, f"differ: {diff[:5]}" if diff else f"{len(x)} rows x {len(cols)} cols"
    return a.read_bytes() == b.read_bytes(), "bytes"


def compare_runs(before: Path, after: Path) -> list[dict]:
    rows = []
    for run in sorted(p.name for p in before.iterdir() if p.is_dir()):
        for table in TABLES:
            same, what = same_table(before / run / table, after / run / table)
            rows.append({"run": run, "file": table, "identical": same, "compared": what})
    return rows


def _without_notes(argv: list[str]) -> list[str]:
    """``argv`` with the text of ``--notes`` left out (it is in the result's notes)."""
    out = list(argv)
    if "--notes" in out and out.index("--notes") + 1 < len(out):
        out[out.index("--notes") + 1] = "TEXT"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--before-runs", type=Path, required=True)
    ap.add_argument("--after-runs", type=Path, required=True)
    ap.add_argument("--pkg-before")
    ap.add_argument("--pkg-after")
    ap.add_argument("--ci-before-s", type=float, help="clean-clone .ci/run seconds, before")
    ap.add_argument("--ci-after-s", type=float, help="clean-clone .ci/run seconds, after")
    ap.add_argument("--notes", default="", help="appended to the result's notes")
    ap.add_argument("--results", default="results")
    args = ap.parse_args()

    from cram.core.benchlog import load_line, machine_line, utc_now
    from cram.core.results import ResultFile, write_result

    refs = {"before": git("rev-parse", args.before).strip(),
            "after": git("rev-parse", args.after).strip()}
    files = {k: python_files(v) for k, v in refs.items()}
    lines = {k: line_counts(f) for k, f in files.items()}
    branch = {k: branches(f) for k, f in files.items()}
    fields = {k: config_fields(f) for k, f in files.items()}
    runs = compare_runs(args.before_runs, args.after_runs)
    tree = [{"measure": f"lines in {folder}", "before": lines["before"][folder],
             "after": lines["after"][folder]} for folder in (*FOLDERS, "total")]
    tree.append({"measure": "data-path branches", "before": len(branch["before"]),
                 "after": len(branch["after"])})
    for name in sorted(set(fields["before"]) | set(fields["after"])):
        tree.append({"measure": f"fields of {name}", "before": fields["before"].get(name),
                     "after": fields["after"].get(name)})
    tree.append({"measure": "config fields (all *Config)", "before": sum(fields["before"].values()),
                 "after": sum(fields["after"].values())})
    if args.pkg_before and args.pkg_after:
        tree.append({"measure": "CLI options (all verbs)", "before": cli_options(args.pkg_before),
                     "after": cli_options(args.pkg_after)})
    if args.ci_before_s and args.ci_after_s:
        tree.append({"measure": ".ci/run seconds (clean clone)", "before": args.ci_before_s,
                     "after": args.ci_after_s})
    result = ResultFile(
        study="one-data-path", title="One data path: the same numbers, and the tree before/after",
        command=" ".join(["python", *_without_notes(sys.argv)]), machine=machine_line(),
        load=load_line(),
        commit=refs["after"], date=utc_now(), columns=["run", "file", "identical", "compared"],
        rows=runs, variant="before/after",
        tables=[{"caption": "The tree before and after:", "columns": ["measure", "before", "after"],
                 "rows": tree}],
        notes=("Run folders trained at each ref with the same commands (demo preset, seed 0, "
               "one thread: `cram train --model M --preset demo --seed 0 --set train.threads=1`, "
               "and the token task `--task recall-unmarked`); every column is compared but the "
               "wall clock `train_seconds`. Lines: non-blank Python lines per folder (`cram`: "
               "its top-level modules). Data-path branches: lines matching "
               f"`{BRANCH.pattern}`." + (f"\n\n{args.notes}" if args.notes else "")),
        extra={"refs": refs, "branches_before": branch["before"],
               "branches_after": branch["after"]})
    print(write_result(result, args.results))
    print(json.dumps(tree, indent=1))
    return 0 if all(r["identical"] for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
