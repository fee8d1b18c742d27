"""Summarise a ``scripts/gpu_check.sh`` output folder into OUTDIR/summary.md (stdlib only).

Reads what the check wrote: steps.tsv (step, exit status, seconds), env.txt, the junit files,
the realistic benchmark rows (bench_realistic.jsonl, one JSON row per line; or a JSON list in
bench_realistic.json), bench_model.json, throughput.txt and the paper-preset run folders.
Missing pieces are reported as missing, never guessed.
Usage: ``python scripts/gpu_check_summary.py OUTDIR [--results DIR | --no-results]``.

Besides summary.md it writes a result file (``cram.core.results``: the realistic routed rows,
the summary as notes) into ``--results DIR``, default ``OUTDIR/results`` (laid out as the
repository's ``results/``: copy its study folder there and run ``cram docs render``). Where the
``cram`` package cannot be imported, the summary is still written and the result file skipped.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

GOAL_P, GOAL_T, GOAL_RATIO, P1_LIMIT = 0.02, 8192, 0.25, 1.1  # issue 16's routed-attention goal


def _step_table(out: Path) -> dict[str, tuple[str, str]]:
    """steps.tsv as {step: (exit status, seconds)}."""
    path = out / "steps.tsv"
    if not path.is_file():
        return {}
    return {row[0]: (row[1], row[2]) for row in csv.reader(path.open(), delimiter="\t")
            if len(row) == 3}


def _steps(out: Path) -> list[str]:
    table = _step_table(out)
    if not table:
        return ["steps.tsv missing"]
    lines = ["| step | exit | seconds |", "|---|---|---|"]
    lines += [f"| {name} | {rc} | {sec} |" for name, (rc, sec) in table.items()]
    return lines + ["", "(exit 124: stopped by its time limit; what it wrote is kept)"]


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
    """A JSON list of rows, or the rows of a JSON-lines file (``.jsonl``); None if unreadable."""
    try:
        text = path.read_text()
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        rows = json.loads(text)
    except (OSError, ValueError):
        return None
    return rows if isinstance(rows, list) else None


def _realistic_rows(out: Path) -> list[dict] | None:
    rows = _json_rows(out / "bench_realistic.jsonl")
    return rows if rows is not None else _json_rows(out / "bench_realistic.json")


def _routed(rows: list[dict] | None) -> list[str]:
    if rows is None:
        return ["bench_realistic.jsonl: missing or not JSON"]
    real = [r for r in rows if r.get("shapes") == "realistic"]
    if not real:
        return ["no realistic routed-attention rows"]
    failed = [r for r in real if r.get("ratio") is None]
    real = [r for r in real if r.get("ratio") is not None]
    lines = [f"{len(real)} rows measured, {len(failed)} failed", "",
             "| backend | pass | Dh | T | p | key chunks | ms | flash ms | ratio (routed / flash) "
             "|",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in real:
        if r["p"] in (1.0, GOAL_P) and r["T"] >= GOAL_T:
            splits = "" if r.get("splits") is None else r["splits"]
            lines.append(f"| {r['backend']} | {r['pass']} | {r['Dh']} | {r['T']} | {r['p']} | "
                         f"{splits} | {r.get('ms', float('nan')):.3f} | "
                         f"{r.get('dense_ms', float('nan')):.3f} | {r['ratio']:.3f} |")
    for backend in dict.fromkeys(r["backend"] for r in real):
        mine = [r for r in real if r["backend"] == backend]
        goal = [r["ratio"] for r in mine if r["p"] == GOAL_P and r["T"] >= GOAL_T]
        dense = [r["ratio"] for r in mine if r["p"] == 1.0]
        ok = bool(goal) and max(goal) <= GOAL_RATIO and bool(dense) and max(dense) <= P1_LIMIT
        lines.append(f"\n{backend}: worst ratio at p = {GOAL_P}, T >= {GOAL_T}: "
                     f"{max(goal) if goal else 'n/a'} (goal <= {GOAL_RATIO}); worst at p = 1: "
                     f"{max(dense) if dense else 'n/a'} (limit {P1_LIMIT}); goal met: {ok} "
                     f"(over {len(goal)} + {len(dense)} rows)")
    for r in real:
        if r.get("profile"):
            where = f"{r['backend']} {r['pass']} Dh {r['Dh']} T {r['T']} p {r['p']}"
            lines += ["", f"Where the time goes: {where} (torch.profiler, ms and launches per "
                      "call)", ""]
            lines += [f"- {e['ms']:.3f} ms x{e['calls']:g}: {e['name']}" for e in r["profile"]]
    for r in failed[:10]:
        lines.append(f"- failed: {r['backend']} {r['pass']} Dh {r['Dh']} T {r['T']} p {r['p']}: "
                     f"{r.get('error', '?')}")
    return lines


def _run(run_dir: Path, wall: tuple[str, str] | None = None) -> str:
    """One line on a run folder, read through the one run-folder reader (partial rows dropped)."""
    from cram.core.errors import CramError
    from cram.core.runs import Run, load_run, read_json, read_table

    try:
        run = load_run(run_dir)
    except CramError as err:  # a run killed early: its table alone, still without partial rows
        if not (run_dir / "metrics.csv").is_file():
            return f"{run_dir.name}: {err}"
        meta, transition = ({} if not (run_dir / name).is_file() else read_json(run_dir / name)
                            for name in ("meta.json", "transition.json"))
        run = Run(run_dir, {}, meta, read_table(run_dir / "metrics.csv")[0],
                  transition=transition or None)
    last = run.metrics.iloc[-1].to_dict() if len(run.metrics) else {}
    keys = ("step", "tokens_seen", "train_seconds", "retrieval_acc", "retrieval_acc_library",
            "retrieval_acc_novel", "attention_fraction", "attention_library", "attention_novel")
    text = f"{run_dir.name}: " + ", ".join(f"{k} {_number(last[k])}" for k in keys if k in last)
    text += f", status {run.meta.get('status', '?')}" if run.meta else ", meta.json missing"
    if wall is not None:
        text += f", wall {wall[1]} s (exit {wall[0]})"
    if run.transition is not None:
        sched = run.transition.get("schedule") or {}
        found = {k: sched[k] for k in ("kind", "warmup_end", "fired_by") if k in sched}
        text += f", transition.json present {found}" if found else ", transition.json present"
    else:
        text += ", transition.json missing"
    return text


def _number(value) -> str:
    """A metrics cell as the CSV wrote it: whole numbers without ``.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _utilisation(out: Path) -> str:
    """Mean and median GPU utilisation from gpu_util.csv (nvidia-smi samples every 5 s)."""
    path = out / "gpu_util.csv"
    try:
        rows = list(csv.reader(path.open()))[1:]
        util = sorted(float(r[1].strip().split()[0]) for r in rows if len(r) > 1)
    except (OSError, ValueError, IndexError):
        return "gpu_util.csv missing or unreadable"
    if not util:
        return "gpu_util.csv: no samples"
    return (f"{len(util)} samples: mean {sum(util) / len(util):.0f}%, "
            f"median {util[len(util) // 2]:.0f}%, max {util[-1]:.0f}%")


def summarize(out: Path) -> str:
    env_file = out / "env.txt"
    env = env_file.read_text().strip() if env_file.is_file() else "env.txt missing"
    model = _json_rows(out / "bench_model.json")
    model_rows = [r for r in (model or []) if r.get("op") in ("model_infer", "model_step")]
    steps = _step_table(out)
    parts = ["# GPU check summary", "", "```", env, "```", "", "## Steps", "", *_steps(out), "",
             "## Tests", "", _junit(out / "junit-gpu.xml"), "", _junit(out / "junit-kernels.xml"),
             "", "## Routed attention vs flash (realistic shapes)", "",
             *_routed(_realistic_rows(out)), "", "## Paper-preset runs", ""]
    for name in ("cram", "transformer"):
        runs = sorted((out / "runs").glob(f"{name}-seed*"))
        parts.append("- " + (_run(runs[0], steps.get(f"train_{name}")) if runs
                             else f"{name}: no run folder"))
    parts += ["", "## Model-level timing rows", ""]
    parts += [f"- {r['op']}: ms {r['ms']:.2f}, dense_ms {r['dense_ms']:.2f}, "
              f"ratio {r['ratio']:.3f}" for r in model_rows] or ["none"]
    parts += ["", "## GPU utilisation while the paper runs trained", "", _utilisation(out)]
    parts += ["", "## Training throughput (paper preset: read-back, data thread, data process)",
              "", "```", *_printed_lines(out / "throughput.txt"), "```"]
    if (out / "throughput_compile.txt").is_file():
        parts += ["", "## Training throughput, eager against torch.compile (paper preset)", "",
                  "```", *_printed_lines(out / "throughput_compile.txt"), "```"]
    return "\n".join(parts) + "\n"


def _printed_lines(path: Path) -> list[str]:
    """A benchmark's printed lines without its JSON list (a line starting with "[")."""
    if not path.is_file():
        return [f"{path.name} missing"]
    return [x for x in path.read_text().splitlines() if not x.startswith("[")]


ROUTED_COLUMNS = ["backend", "pass", "Dh", "T", "p", "splits", "ms", "dense_ms", "ratio",
                  "tile_ratio", "error"]


def record(out: Path, text: str, results: Path) -> Path | None:
    """The check as a result file under ``results``; None where cram cannot be imported."""
    try:
        from cram.core.benchlog import record_benchmark
        from cram.core.results import study_id
    except ImportError as err:
        print(f"gpu_check_summary: no result file ({err})", file=sys.stderr)
        return None
    rows = [{k: r.get(k) for k in ROUTED_COLUMNS} for r in _realistic_rows(out) or []
            if r.get("shapes") == "realistic"]
    title = "GPU check (`scripts/gpu_check.sh`)"
    notes = ("Rows: the realistic routed-attention rows (ratio = routed ms / flash ms). The "
             "check's summary follows.\n\n" + text.split("\n", 1)[1].strip().replace(
                 "\n## ", "\n#### "))
    return record_benchmark(study_id(title), title, rows, ROUTED_COLUMNS, notes,
                            argv=["python", "scripts/gpu_check_summary.py", str(out)],
                            results=results, extra={"measured_by": "scripts/gpu_check.sh"})


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python scripts/gpu_check_summary.py",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("outdir", metavar="OUTDIR")
    ap.add_argument("--results", default=None, metavar="DIR",
                    help="results folder for the result file (default OUTDIR/results)")
    ap.add_argument("--no-results", action="store_true", help="write no result file")
    args = ap.parse_args(argv)
    out = Path(args.outdir)
    text = summarize(out)
    (out / "summary.md").write_text(text)
    print(text)
    if not args.no_results:
        path = record(out, text, Path(args.results) if args.results else out / "results")
        if path is not None:
            print(f"result file: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
