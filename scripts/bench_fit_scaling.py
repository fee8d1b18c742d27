"""Time `cram fit gamma --method mle` against the number of curves and of rows per curve.

For each cell of the grid (``--curves`` x ``--rows`` rows per curve: 100 x 1000 is a
100,000-row table) and each option set (``full``: window sensitivity and figures, as the CLI
does by default; ``no-ws``: ``--no-window-sensitivity``; ``bare``: ``--no-window-sensitivity
--no-figures``), runs the fit through the CLI in a subprocess, from a temporary folder, with
``OMP_NUM_THREADS=1`` and without ``--quiet`` (so the progress lines on stderr are part of what
is timed), and measures its wall-clock time. The data are synthetic power-law curves with noise
(``make_table``), delays spaced evenly in log time over 3 decades; the same file is fitted by
every variant.

``--before REF`` also times the code of an earlier commit: the package of ``REF`` is unpacked
with ``git archive`` and laid out as the installed package would be (``package-dir`` of its
pyproject.toml, by symbolic links), and runs with ``PYTHONPATH`` pointing there, from a
temporary folder, under the same interpreter (like ``scripts/bench_throughput.py``, which runs
another checkout's ``python -m cram`` from a temporary folder); ``--after REF`` does the same
for the code timed as "after" (default: the installed package, the working tree of an editable
install). Runs alternate between before and after in every round, so load changes on a shared
machine fall on both alike; cells with at least ``--before-once-rows`` rows run "before" in the
first round only (it can take minutes). For every cell the JSON documents of before and after
are compared (``created``, ``command`` and ``inputs`` removed): ``same_numbers`` says whether
every fitted number is the same.

Writes a result file (``cram.core.results``, study ``fit-scaling``) into ``--results DIR``
(default ``$CRAM_RESULTS_DIR``, else ``./results``; the project's is the repository's
``results/``, rendered into docs/benchmarks.md by ``cram docs render``) unless
``--no-results``: one row per timed run (variant, round, curves, rows per curve, rows, options,
seconds, 1-minute load), the command, the machine, the load, the commit of the code timed as
"after", the date, and a table of the median seconds per cell; ``extra`` holds the load after
the runs and the commits of before and after. Prints that table as markdown.

Usage::

    python scripts/bench_fit_scaling.py                      # after only, default grid
    python scripts/bench_fit_scaling.py --before HEAD~1 --rounds 2
    python scripts/bench_fit_scaling.py --curves 2 --rows 10 --options full --results bench-out
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPTION_SETS = {
    "full": [],
    "no-ws": ["--no-window-sensitivity"],
    "bare": ["--no-window-sensitivity", "--no-figures"],
}
VOLATILE = ("created", "command", "inputs")


def make_table(curves: int, rows: int, seed: int = 0):
    """A tidy curve table: ``curves`` power-law curves of ``rows`` points each, with noise."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    t = np.geomspace(1.0, 1000.0, rows)
    frames = []
    for c in range(curves):
        gamma, a = rng.uniform(0.1, 0.5), rng.uniform(0.6, 0.95)
        value = np.clip(a * t ** (-gamma) + rng.normal(0.0, 0.03, rows), 0.0, 1.0)
        frames.append(pd.DataFrame({"curve": f"c{c:03d}", "delay_value": t,
                                    "delay_unit": "days", "measure": "recall", "value": value}))
    return pd.concat(frames, ignore_index=True)


def package_view(ref: str, dest: Path, repo: Path = ROOT) -> Path:
    """The package of commit ``ref`` laid out under ``dest`` as ``import cram`` expects.

    Unpacks ``ref`` with ``git archive`` into ``dest/tree`` and links each package's files
    into ``dest/view`` following ``package-dir`` of that commit's pyproject.toml. Returns the
    folder to put on ``PYTHONPATH``.
    """
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    tree, view = dest / "tree", dest / "view"
    blob = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", ref],
                          capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tree, filter="data")
        else:  # pragma: no cover - Python < 3.10.12 / 3.11.4
            tar.extractall(tree)
    cfg = tomllib.loads((tree / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = cfg.get("package-dir", {})
    for pkg in cfg["packages"]:
        parts = pkg.split(".")
        src = tree / Path(*parts)
        for i in range(len(parts), 0, -1):
            key = ".".join(parts[:i])
            if key in mapping:
                src = tree / mapping[key] / Path(*parts[i:]) if parts[i:] else tree / mapping[key]
                break
        out = view / Path(*parts)
        out.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            # files and data folders; sub-packages get their own entry in `packages`
            if (f.is_file() or not (f / "__init__.py").exists()) and not (out / f.name).exists():
                (out / f.name).symlink_to(f.resolve())
    return view


def run_fit(csv: Path, options: list[str], pythonpath: str | None, workdir: Path) -> dict:
    """One timed ``cram fit gamma --method mle`` of ``csv`` (from ``workdir``)."""
    out = Path(tempfile.mkdtemp(prefix="fit-", dir=workdir)) / "fit"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    cmd = [sys.executable, "-m", "cram", "fit", "gamma", "--human-csv", str(csv), "--method",
           "mle", "--json", "--out", str(out), *options]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    # from a temporary folder: from a checkout, `-m cram` would import that checkout's package
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir, check=False)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-2000:]}")
    doc = json.loads(res.stdout)
    for k in VOLATILE:
        doc.pop(k, None)
    return {"seconds": seconds, "load_1min": load, "doc": doc,
            "stderr_lines": res.stderr.count("\n") + res.stderr.count("\r"),
            "progress_window_sensitivity": "window sensitivity" in res.stderr,
            "progress_fits": "mle fits" in res.stderr}


def git(*args: str) -> str:
    """Output of a git command in the repository (empty when git fails)."""
    res = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                         check=False)
    return res.stdout.strip() if res.returncode == 0 else ""


def _ints(text: str) -> list[int]:
    return [int(x) for x in str(text).split(",") if x.strip()]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--curves", default="10,100", help="comma-separated numbers of curves")
    p.add_argument("--rows", default="100,1000", help="comma-separated rows per curve")
    p.add_argument("--options", default="full,bare",
                   help=f"comma-separated option sets among {', '.join(OPTION_SETS)}")
    p.add_argument("--rounds", type=int, default=1, help="timed runs per cell and variant")
    p.add_argument("--before", default=None, metavar="REF",
                   help="also time the code of this git commit (interleaved with after)")
    p.add_argument("--after", default=None, metavar="REF",
                   help="time this git commit as 'after' (default: the installed package, i.e. "
                        "the working tree of an editable install)")
    p.add_argument("--before-once-rows", type=int, default=50_000, metavar="N",
                   help="cells with at least N rows run 'before' in the first round only")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed small fits per variant first (compiles the bytecode of an "
                        "unpacked commit, fills caches)")
    p.add_argument("--results", default=None, metavar="DIR",
                   help="results folder (default $CRAM_RESULTS_DIR, else ./results)")
    p.add_argument("--no-results", action="store_true", help="write no result file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    unknown = [o for o in args.options.split(",") if o not in OPTION_SETS]
    if unknown:
        raise SystemExit(f"--options: unknown {unknown}; choose among {list(OPTION_SETS)}")
    if not args.no_results:  # a folder that cannot take the result fails before any fit
        from cram.core.results import check_results_dir, default_results_dir

        check_results_dir(args.results or default_results_dir())
    command = ["python", "scripts/bench_fit_scaling.py", *(sys.argv[1:] if argv is None else argv)]
    load_before = list(os.getloadavg())
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-fit-scaling-") as tmp:
        tmp = Path(tmp)
        variants = [("after", str(package_view(args.after, tmp / "after"))
                     if args.after else None)]
        if args.before:
            variants.insert(0, ("before", str(package_view(args.before, tmp / "before"))))
        small = tmp / "warmup.csv"
        make_table(2, 10).to_csv(small, index=False)
        for _ in range(args.warmup):
            for _label, pythonpath in variants:
                run_fit(small, [], pythonpath, tmp)
        for curves in _ints(args.curves):
            for per in _ints(args.rows):
                csv = tmp / f"curves{curves}x{per}.csv"
                make_table(curves, per).to_csv(csv, index=False)
                for opt in args.options.split(","):
                    rows += _cell(csv, curves, per, opt, variants, args, tmp)
    summary = summarise(rows)
    print(markdown(summary))
    if not args.no_results:
        path = record(args, command, rows, summary, load_before)
        print(f"# result file: {path}")
    return 0


def record(args, command: list[str], rows: list[dict], summary: list[dict],
           load_before: list[float]) -> Path:
    """Write the runs and the summary as a result file (study ``fit-scaling``); its path."""
    import shlex

    from cram.core.benchlog import git_commit, load_line, machine_line, utc_now
    from cram.core.results import ResultFile, write_result

    here, dirty = git_commit()
    after = git("rev-parse", args.after) if args.after else here
    extra = {"load_before": load_before, "load_after": list(os.getloadavg()),
             "omp_num_threads": 1, "rounds": args.rounds, "before_ref": args.before,
             "before_commit": git("rev-parse", args.before) if args.before else None,
             "after_ref": args.after or "installed package (working tree)",
             "after_commit": after, "option_sets": OPTION_SETS}
    if dirty and not args.after:
        extra["uncommitted_changes"] = True
    notes = ("Wall-clock seconds of `python -m cram fit gamma --human-csv FILE --method mle "
             "--json --out DIR [options]` in a subprocess from a temporary folder, "
             "OMP_NUM_THREADS=1, stderr captured (not a terminal). Options: full = window "
             "sensitivity and figures (the CLI's default), no-ws = --no-window-sensitivity, "
             "bare = --no-window-sensitivity --no-figures. Data: synthetic power-law curves "
             "with noise, delays evenly spaced in log time over 3 decades (make_table). "
             "before/after: the package of the commits in extra, run alternately in each round; "
             "same_numbers: the JSON documents of before and after are equal. load_1min: the "
             "1-minute load average before each run (2 shared cores: other jobs slow a run).")
    result = ResultFile(
        study="fit-scaling", title="MLE γ fit time against curves × rows (`cram fit gamma`)",
        command=shlex.join(command), machine=machine_line(), load=load_line(), commit=after,
        date=utc_now(), columns=["variant", "round", "curves", "rows_per_curve", "rows",
                                 "options", "seconds", "load_1min", "same_numbers",
                                 "progress_window_sensitivity"],
        rows=rows, variant="before/after" if args.before else None,
        tables=[{"caption": "Median seconds per cell (speed-up = before / after):",
                 "columns": list(summary[0]) if summary else [], "rows": summary}],
        notes=notes, extra=extra)
    return write_result(result, args.results)


def _cell(csv, curves, per, opt, variants, args, tmp) -> list[dict]:
    """All timed runs of one grid cell and option set, variants alternating in each round."""
    rows, docs = [], {}
    for rnd in range(args.rounds):
        order = variants if rnd % 2 == 0 else variants[::-1]
        for label, pythonpath in order:
            if label == "before" and rnd > 0 and curves * per >= args.before_once_rows:
                continue
            r = run_fit(csv, OPTION_SETS[opt], pythonpath, tmp)
            docs.setdefault(label, r.pop("doc"))
            row = {"variant": label, "round": rnd, "curves": curves, "rows_per_curve": per,
                   "rows": curves * per, "options": opt, "argv": OPTION_SETS[opt], **r}
            rows.append(row)
            print(f"{label:>6} r{rnd} {curves:>4} curves x {per:>5} rows {opt:>5}: "
                  f"{r['seconds']:8.2f} s (load {r['load_1min']:.2f})", file=sys.stderr,
                  flush=True)
    if "before" in docs:
        same = docs["before"] == docs["after"]
        for row in rows:
            row["same_numbers"] = same
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """One row per (curves, rows per curve, options): median seconds of each variant."""
    cells: dict = {}
    for r in rows:
        cells.setdefault((r["curves"], r["rows_per_curve"], r["options"]), {}).setdefault(
            r["variant"], []).append(r["seconds"])
    out = []
    for (c, per, opt), by in cells.items():
        b = statistics.median(by["before"]) if "before" in by else None
        a = statistics.median(by["after"]) if "after" in by else None
        out.append({"curves": c, "rows_per_curve": per, "rows": c * per, "options": opt,
                    "before_s": None if b is None else round(b, 2),
                    "after_s": None if a is None else round(a, 2),
                    "speed_up": None if a is None or b is None else round(b / a, 2),
                    "runs_before": len(by.get("before", [])),
                    "runs_after": len(by.get("after", []))})
    return out


def markdown(summary: list[dict]) -> str:
    """The summary as a markdown table."""
    from cram.core.benchlog import markdown_table

    return markdown_table(summary).rstrip("\n")


if __name__ == "__main__":
    sys.exit(main())
