"""Summarise a ``scripts/gpu_check.sh`` output folder into OUTDIR/summary.md (stdlib only).

Reads what the check wrote: steps.tsv (step, exit status, seconds), env.txt, the junit files,
the two benchmark JSON files and the paper-preset run folders. Missing pieces are reported as
missing, never guessed. Usage: ``python scripts/gpu_check_summary.py OUTDIR``.
"""

from __future__ import annotations

import csv
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

GOAL_P, GOAL_T, GOAL_RATIO, P1_LIMIT = 0.02, 8192, 0.25, 1.1  # issue 16's routed-attention goal


def _steps(out: Path) -> list[str]:
    path = out / "steps.tsv"
    if not path.is_file():
        return ["steps.tsv missing"]
    lines = ["| step | exit | seconds |", "|---|---|---|"]
    for row in csv.reader(path.open(), delimiter="\t"):
        if len(row) == 3:
            lines.append(f"| {row[0]} | {row[1]} | {row[2]} |")
    return lines


def _junit(path: Path) -> str:
    if not path.is_file():
        return f"{path.name}: missing"
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors",
                                                               "skipped")}
    failed = [f"{c.get('classname')}::{c.get('name')}" for s in suites for c in s.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    text = (f"{path.name}: {total['tests']} tests, {total['failures']} failed, "
            f"{total['errors']} errors, {total['skipped']} skipped")
    return text + "".join(f"\n  - {f}" for f in failed[:20])


def _json_rows(path: Path) -> list[dict] | None:
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rows if isinstance(rows, list) else None


def _routed(rows: list[dict] | None) -> list[str]:
    if rows is None:
        return ["bench_realistic.json: missing or not JSON"]
    real = [r for r in rows if r.get("shapes") == "realistic"]
    if not real:
        return ["no realistic routed-attention rows"]
    lines = ["| backend | pass | Dh | T | p | ratio (routed / flash) |",
             "|---|---|---|---|---|---|"]
    for r in real:
        if r["p"] in (1.0, GOAL_P) and r["T"] >= GOAL_T:
            lines.append(f"| {r['backend']} | {r['pass']} | {r['Dh']} | {r['T']} | {r['p']} | "
                         f"{r['ratio']:.3f} |")
    for backend in dict.fromkeys(r["backend"] for r in real):
        mine = [r for r in real if r["backend"] == backend]
        goal = [r["ratio"] for r in mine if r["p"] == GOAL_P and r["T"] >= GOAL_T]
        dense = [r["ratio"] for r in mine if r["p"] == 1.0]
        ok = bool(goal) and max(goal) <= GOAL_RATIO and bool(dense) and max(dense) <= P1_LIMIT
        lines.append(f"\n{backend}: worst ratio at p = {GOAL_P}, T >= {GOAL_T}: "
                     f"{max(goal) if goal else 'n/a'} (goal <= {GOAL_RATIO}); worst at p = 1: "
                     f"{max(dense) if dense else 'n/a'} (limit {P1_LIMIT}); goal met: {ok}")
    return lines


def _run(run_dir: Path) -> str:
    metrics = run_dir / "metrics.csv"
    if not metrics.is_file():
        return f"{run_dir.name}: no metrics.csv"
    rows = list(csv.DictReader(metrics.open()))
    last = rows[-1] if rows else {}
    has_transition = (run_dir / "transition.json").is_file()
    keys = ("step", "tokens_seen", "train_seconds", "retrieval_acc", "attention_fraction")
    return f"{run_dir.name}: " + ", ".join(f"{k} {last.get(k, '?')}" for k in keys) + \
        f", transition.json {'present' if has_transition else 'missing'}"


def summarize(out: Path) -> str:
    env_file = out / "env.txt"
    env = env_file.read_text().strip() if env_file.is_file() else "env.txt missing"
    model = _json_rows(out / "bench_model.json")
    model_rows = [r for r in (model or []) if r.get("op") in ("model_infer", "model_step")]
    parts = ["# GPU check summary", "", "```", env, "```", "", "## Steps", "", *_steps(out), "",
             "## Tests", "", _junit(out / "junit-gpu.xml"), "", _junit(out / "junit-kernels.xml"),
             "", "## Routed attention vs flash (realistic shapes)", "",
             *_routed(_json_rows(out / "bench_realistic.json")), "", "## Paper-preset runs", ""]
    for name in ("cram", "transformer"):
        runs = sorted((out / "runs").glob(f"{name}-seed*"))
        parts.append("- " + (_run(runs[0]) if runs else f"{name}: no run folder"))
    parts += ["", "## Model-level timing rows", ""]
    parts += [f"- {r['op']}: ms {r['ms']:.2f}, dense_ms {r['dense_ms']:.2f}, "
              f"ratio {r['ratio']:.3f}" for r in model_rows] or ["none"]
    return "\n".join(parts) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python scripts/gpu_check_summary.py OUTDIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    text = summarize(out)
    (out / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
