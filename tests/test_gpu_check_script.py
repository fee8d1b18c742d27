"""scripts/gpu_check.sh: the dry run prints commands that parse; the summary reads its outputs."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _dry_run(outdir: Path, env: dict | None = None) -> list[list[str]]:
    res = subprocess.run(["bash", str(SCRIPT), str(outdir), "--dry-run"], capture_output=True,
                         text=True, timeout=60, check=False, env=env)
    assert res.returncode == 0, res.stderr
    commands = []
    for line in res.stdout.splitlines():
        argv = shlex.split(line)
        if ">" in argv:  # `cmd ... > FILE`: stdout redirected into the output folder
            i = argv.index(">")
            assert Path(argv[i + 1]).parent == outdir
            argv = argv[:i]
        commands.append(argv)
    return commands


def test_dry_run_prints_every_step_and_runs_nothing(tmp_path):
    out = tmp_path / "gpu-out"
    commands = _dry_run(out)
    assert not out.exists()  # nothing ran, not even mkdir
    text = [" ".join(c) for c in commands]
    assert any("pytest -q -m gpu tests" in t and f"{out}/junit-gpu.xml" in t for t in text)
    assert any("test_kernels_routed_attention.py" in t and "junit-kernels.xml" in t for t in text)
    trains = [c for c in commands if c[:2] == ["cram", "train"]]
    assert {c[c.index("--model") + 1] for c in trains} == {"cram", "transformer"}
    assert all(c[c.index("--preset") + 1] == "paper" for c in trains)
    assert all(c[c.index("--out") + 1].startswith(f"{out}/runs/") for c in trains)
    benches = [c for c in commands if c[:3] == ["cram", "bench", "kernels"]]
    realistic = [c for c in benches if "realistic" in c]
    assert realistic and realistic[0][realistic[0].index("--stream") + 1] == \
        f"{out}/bench_realistic.jsonl"
    assert all("--json" in c for c in benches)
    model = [c for c in benches if "--model-runs" in c]
    assert model and model[0][model[0].index("--parts") + 1] == "model"
    assert any(c[:2] == ["python", "scripts/bench_throughput.py"] for c in commands)
    # the paper runs are started before the tests (they train in the background meanwhile)
    first_test = next(i for i, c in enumerate(commands) if "pytest" in c)
    assert all(commands.index(c) < first_test for c in trains)
    assert any(c[-1] == str(out) and c[-2].endswith("gpu_check_summary.py") for c in commands)


def test_the_compile_step_runs_only_when_asked(tmp_path):
    """CRAM_GPU_CHECK_COMPILE=1 adds eager-against-compiled throughput; by default: left out."""
    def throughput_runs(commands):
        return [c for c in commands if c[:2] == ["python", "scripts/bench_throughput.py"]]

    default = throughput_runs(_dry_run(tmp_path / "a"))
    asked = throughput_runs(_dry_run(tmp_path / "b", {**os.environ, "CRAM_GPU_CHECK_COMPILE": "1"}))
    assert len(default) == 1 and len(asked) == 2
    variants = [asked[1][i + 1] for i, x in enumerate(asked[1]) if x == "--variant"]
    assert [v.split("=", 1)[0] for v in variants] == ["eager", "compiled"]
    assert "train.compile=true" in variants[1] and "train.compile" not in variants[0]


def test_dry_run_commands_parse():
    """Each `cram` line parses with the real CLI parser and its verb answers --help.

    Each test file and script it names exists; the gpu marker is registered.
    """
    from cram.cli import build_parser

    commands = _dry_run(Path("/tmp/gpu-check-dry-run"))
    parser = build_parser()
    for argv in commands:
        if argv[0] == "cram":
            args = parser.parse_args(argv[1:])  # exits (SystemExit) on an unknown option
            assert callable(args.func)
            verb = [a for a in argv[1:3] if not a.startswith("-")]
            res = subprocess.run([sys.executable, "-m", "cram", *verb, "--help"],
                                 capture_output=True, text=True, timeout=120, check=False)
            assert res.returncode == 0, (verb, res.stderr)
        elif argv[:3] == ["python", "-m", "pytest"]:
            files = [a for a in argv if a.startswith("tests")]
            assert files and all((ROOT / f).exists() for f in files)
        elif argv[0] == "python" and argv[1] == "-c":
            compile(argv[2], "<gpu_check -c>", "exec")  # the snippet is valid Python
        elif argv[0] == "python":
            assert (ROOT / argv[1]).is_file()
    assert "gpu:" in (ROOT / "pyproject.toml").read_text()


@pytest.mark.parametrize("argv", [["--dry-run"], []])
def test_missing_outdir_is_refused_in_one_line(argv):
    res = subprocess.run(["bash", str(SCRIPT), *argv], capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode != 0 and res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1 and "OUTDIR is missing" in res.stderr


def test_summary_reads_what_the_check_writes(tmp_path):
    out = tmp_path
    (out / "steps.tsv").write_text("tests_gpu\t0\t61\ntrain_cram\t1\t120\n")
    (out / "env.txt").write_text("device NVIDIA H200\n")
    (out / "junit-gpu.xml").write_text(
        '<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1">'
        '<testcase classname="t" name="ok"/><testcase classname="t" name="bad">'
        '<failure message="x"/></testcase></testsuite></testsuites>')
    rows = [{"op": "routed_attention", "shapes": "realistic", "backend": "triton", "pass": p,
             "Dh": 64, "T": 8192, "p": prob, "ratio": ratio}
            for p in ("forward", "forward+backward")
            for prob, ratio in ((1.0, 1.05), (0.02, 0.2))]
    rows[-1] |= {"splits": 7, "profile": [{"name": "_dq_kernel", "ms": 0.1234, "calls": 1}]}
    rows.append({"op": "routed_attention", "shapes": "realistic", "backend": "flex",
                 "pass": "forward", "Dh": 64, "T": 8192, "p": 0.02, "ratio": None, "ms": None,
                 "error": "OutOfMemoryError: CUDA out of memory"})
    (out / "bench_realistic.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = out / "runs" / "cram-seed0"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("step,tokens_seen,train_seconds\n0,0,0\n900,2e6,110.5\n")
    (run / "transition.json").write_text(json.dumps(
        {"schedule": {"kind": "learned", "warmup_end": 1234, "fired_by": "criterion"}}))
    (run / "meta.json").write_text(json.dumps({"status": "interrupted"}))
    (out / "gpu_util.csv").write_text("timestamp, utilization.gpu [%], memory.used [MiB]\n"
                                      "t, 30 %, 100 MiB\nt, 50 %, 100 MiB\nt, 40 %, 90 MiB\n")
    (out / "throughput.txt").write_text("  r0 demo cram: 123456 tokens/s\n[{}]\n")
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check_summary.py"),
                          str(out)], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    text = (out / "summary.md").read_text()
    assert "| train_cram | 1 | 120 |" in text and "NVIDIA H200" in text
    assert "3 tests, 1 failed" in text and "t::bad" in text
    assert "junit-kernels.xml: missing" in text
    assert "triton: worst ratio at p = 0.02, T >= 8192: 0.2" in text and "goal met: True" in text
    assert "4 rows measured, 1 failed" in text and "flex forward" in text
    assert "out of memory" in text
    assert "| triton | forward+backward | 64 | 8192 | 0.02 | 7 |" in text
    assert "Where the time goes: triton forward+backward Dh 64 T 8192 p 0.02" in text
    assert "- 0.123 ms x1: _dq_kernel" in text
    assert "cram-seed0: step 900" in text and "train_seconds 110.5" in text
    assert "status interrupted" in text and "wall 120 s (exit 1)" in text
    assert "'warmup_end': 1234" in text and "transformer: no run folder" in text
    assert "3 samples: mean 40%, median 40%, max 50%" in text
    assert "123456 tokens/s" in text and "[{}]" not in text
    from cram.core.results import load_results  # the result file, beside the summary

    (result,) = load_results(out / "results")["gpu-check-scripts-gpu-check-sh"]
    assert [r["backend"] for r in result.rows] == ["triton"] * 4 + ["flex"]
    assert "#### Steps" in result.notes and "\n## " not in result.notes


STUB_PYTHON = """#!/bin/sh
# stands in for python: pytest writes a junit file, the throughput script prints one line,
# everything else runs for real
case "$1" in *bench_throughput.py) echo "r0 demo cram: 1000 tokens/s"; exit 0;; esac
if [ "$1" = "-m" ] && [ "$2" = "pytest" ]; then
    while [ $# -gt 0 ]; do
        if [ "$1" = "--junitxml" ]; then
            echo '<testsuite tests="2" failures="0" errors="0" skipped="0"/>' > "$2"; fi
        shift
    done
    exit 0
fi
exec {python} "$@"
"""

STUB_CRAM = """#!/bin/sh
# stands in for cram: train makes a run folder, bench prints rows, argv is logged
echo "$@" >> "{log}"
if [ "$1" = "train" ]; then
    while [ "$1" != "--out" ]; do shift; done
    mkdir -p "$2" && printf 'step,tokens_seen,train_seconds\\n900,100,2.0\\n' > "$2/metrics.csv"
    echo '{{}}' > "$2/transition.json"
    exit 0
fi
echo '[{{"op": "model_step", "ms": 2.0, "dense_ms": 1.0, "ratio": 2.0}}]'
"""


def test_real_run_plumbing_with_stub_tools(tmp_path):
    """Not a dry run: every step runs (stubbed tools), is logged and timed.

    A failed step (nvidia-smi missing here) makes the exit status 1, and the summary is written.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "cram-calls.txt"
    for name, text in (("python", STUB_PYTHON.format(python=sys.executable)),
                       ("cram", STUB_CRAM.format(log=log))):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    out = tmp_path / "out"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHON": str(bin_dir / "python"),
           "CRAM": str(bin_dir / "cram"), "CRAM_GPU_CHECK_STEPS": "7", "HOME": str(tmp_path)}
    res = subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True,
                         env=env, timeout=120, check=False)
    steps = dict(line.split("\t")[:2] for line in (out / "steps.tsv").read_text().splitlines())
    assert steps.pop("nvidia_smi") != "0"  # no nvidia-smi on this machine
    assert res.returncode == 1 and "nvidia_smi failed" in res.stderr
    assert set(steps) == {"env", "tests_gpu", "tests_kernels", "bench_realistic", "train_cram",
                          "train_transformer", "bench_model", "throughput", "summary"}
    assert all(rc == "0" for rc in steps.values()), steps
    assert all((out / "logs" / f"{name}.log").is_file() for name in steps)
    calls = log.read_text().splitlines()
    assert sum("--steps 7" in c for c in calls) == 2
    summary = (out / "summary.md").read_text()
    assert "junit-gpu.xml: 2 tests, 0 failed" in summary and "cram-seed0: step 900" in summary
    assert "model_step: ms 2.00, dense_ms 1.00, ratio 2.000" in summary
    assert "| nvidia_smi | 127 |" in summary and "r0 demo cram: 1000 tokens/s" in summary
