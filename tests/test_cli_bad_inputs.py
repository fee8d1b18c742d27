"""Every bad input a user can give the CLI ends in one line on stderr (issue 17).

It also gives a non-zero exit code, no traceback, and leaves the files that existed before
byte-identical.

Table-driven: each case builds its inputs in a fresh folder (a copy of one tiny synthetic run plus
small CSVs), runs ``python -m cram ...`` there as a subprocess with progress bars off, and checks
the four properties. The boundary mapping itself (decode, JSON, OS, out-of-memory and state-dict
errors; internal errors) is also tested in-process, and ``cram bench`` is checked to write nothing
into the package and to append concurrently without losing sections.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cram.testing import write_synthetic_run

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}
ENV.pop("CRAM_DEBUG", None)
ENV.pop("CRAM_RESULTS_DIR", None)
GOOD_CSV = "delay_value,delay_unit,measure,value\n1,hours,recall,0.9\n2,hours,recall,0.8\n" \
           "4,hours,recall,0.7\n"


# ------------------------------------------------------------------------------------------
# helpers: inputs


def _edit_meta(run: Path, **changes) -> None:
    meta = json.loads((run / "meta.json").read_text())
    meta.update(changes)
    (run / "meta.json").write_text(json.dumps(meta))


def _metrics_lines(run: Path) -> list[str]:
    return (run / "metrics.csv").read_text().splitlines()


def _dup_step(run: Path) -> None:
    m = _metrics_lines(run)
    (run / "metrics.csv").write_text("\n".join(m[:3] + [m[2]] + m[3:]) + "\n")


def _swap_steps(run: Path) -> None:
    m = _metrics_lines(run)
    (run / "metrics.csv").write_text("\n".join([m[0], m[2], m[1]] + m[3:]) + "\n")


def _write(name: str, data: str | bytes):
    def setup(d: Path) -> None:
        target = d / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            target.write_bytes(data)
        else:
            target.write_text(data)
    return setup


def _run_edit(edit):
    return lambda d: edit(d / "run")


BINARY = bytes(range(256)) * 8
RUN_CURVES = ["data", "curves", "--run", "run", "--kind", "episodic_reliance"]
FIT_RUN = ["fit", "gamma", "--run", "run", "--method", "mle", "--quiet", "--no-figures"]
FIT_CSV = ["fit", "gamma", "--human-csv", "u.csv", "--method", "mle", "--quiet", "--no-figures"]
TRAIN = ["train", "--model", "cram", "--preset", "cpu-tiny", "--out", "new-run", "--quiet"]

#: (id, setup(case_dir), argv after ``python -m cram``, a fragment the one line must contain)
CASES = [
    # run folders
    ("config-garbled", _run_edit(lambda r: (r / "config.json").write_text("{not json")),
     RUN_CURVES, "config.json: not valid JSON"),
    ("config-garbled-fit", _run_edit(lambda r: (r / "config.json").write_text("{\"model\": ")),
     FIT_RUN, "config.json: not valid JSON"),
    ("config-not-utf8", _run_edit(lambda r: (r / "config.json").write_bytes(b"\xff\xfe{\x00}")),
     RUN_CURVES, "config.json: not UTF-8"),
    ("resume-config-not-utf8",
     _run_edit(lambda r: (r / "config.json").write_bytes(b"\xff\xfe{\x00}")),
     ["train", "--model", "cram", "--preset", "cpu-tiny", "--out", "run", "--resume", "--quiet"],
     "config.json: not UTF-8"),
    ("resume-config-garbled", _run_edit(lambda r: (r / "config.json").write_text("{\"seed\": ")),
     ["train", "--model", "cram", "--preset", "cpu-tiny", "--out", "run", "--resume", "--quiet"],
     "not valid JSON"),
    ("metrics-binary", _run_edit(lambda r: (r / "metrics.csv").write_bytes(BINARY)),
     RUN_CURVES, "metrics.csv: binary data"),
    ("schema-version-text", _run_edit(lambda r: _edit_meta(r, schema_version="one")),
     RUN_CURVES, "meta.json: schema_version 'one' is not an integer"),
    ("schema-version-float", _run_edit(lambda r: _edit_meta(r, schema_version=1.5)),
     FIT_RUN, "schema_version 1.5 is not an integer"),
    ("metrics-duplicate-step", _run_edit(_dup_step), RUN_CURVES, "appears twice"),
    ("metrics-out-of-order", _run_edit(_swap_steps), RUN_CURVES, "out of order"),
    ("run-missing", None, ["data", "curves", "--run", "nowhere"], "nowhere"),
    # curve CSVs and fits
    ("csv-header-only", _write("u.csv", "delay_value,delay_unit,measure,value\n"), FIT_CSV,
     "u.csv: no data rows"),
    ("csv-not-utf8", _write("u.csv", b"delay_value,delay_unit,measure,value\n1,h,r,\xff\n"),
     ["data", "check", "u.csv"], "u.csv: not UTF-8"),
    ("csv-binary", _write("u.csv", BINARY), FIT_CSV, "u.csv"),
    ("csv-source-per-row", _write("u.csv", "delay_value,delay_unit,measure,value,source\n"
                                  "1,hours,recall,0.9,a\n2,hours,recall,0.8,b\n"), FIT_CSV,
     "add a 'curve' column"),
    ("csv-duplicate-delay", _write("u.csv", GOOD_CSV + "2,hours,recall,0.75\n"), FIT_CSV,
     "2 rows at delay_value 2 (lines 3, 5)"),
    ("binomial-without-n", _write("u.csv", GOOD_CSV), [*FIT_CSV, "--likelihood", "binomial"],
     "add a column 'n'"),
    ("binomial-participants", _write("u.csv", "delay_value,delay_unit,measure,value,n,n_kind\n"
                                     "1,hours,recall,0.9,20,participants\n"
                                     "2,hours,recall,0.8,20,participants\n"
                                     "4,hours,recall,0.7,20,participants\n"),
     [*FIT_CSV, "--likelihood", "binomial"], "n_kind=trials"),
    ("rules-garbled", lambda d: (_write("u.csv", GOOD_CSV)(d), _write("r.json", "{")(d)),
     [*FIT_CSV, "--rules", "r.json"], "r.json: not valid JSON"),
    ("rules-not-utf8", lambda d: (_write("u.csv", GOOD_CSV)(d), _write("r.json", b"\xff")(d)),
     [*FIT_CSV, "--rules", "r.json"], "r.json: not UTF-8"),
    ("rope-inf", _write("u.csv", GOOD_CSV), [*FIT_CSV, "--rope", "inf"], "rope inf"),
    ("offset-nan", _write("u.csv", GOOD_CSV), [*FIT_CSV, "--offset", "nan"], "offset"),
    ("fit-seed-negative", _write("u.csv", GOOD_CSV), [*FIT_CSV, "--seed", "-1"], "--seed -1"),
    ("fit-seed-float", _write("u.csv", GOOD_CSV), [*FIT_CSV, "--seed", "1e20"], "--seed"),
    ("fit-out-exists", lambda d: (_write("u.csv", GOOD_CSV)(d), _write("fit/keep.txt", "x")(d)),
     [*FIT_CSV, "--out", "fit"], "already exists"),
    ("dataset-unknown", None, ["data", "show", "no-such-dataset"], "no-such-dataset"),
    # training configs: refused before the run folder exists
    ("steps-1e20", None, [*TRAIN, "--set", "train.steps=1e20"], "train.steps"),
    ("steps-huge-int", None, [*TRAIN, "--set", f"train.steps={10**25}"], "out of range"),
    ("lr-inf", None, [*TRAIN, "--set", "train.lr=inf"], "finite"),
    ("lr-nan", None, [*TRAIN, "--set", "train.lr=nan"], "finite"),
    ("train-seed-1e20", None, [*TRAIN, "--seed", "1e20"], "--seed"),
    # bench and app arguments
    ("bench-seeds-0", None, ["bench", "srcd", "--preset", "cpu-tiny", "--seeds", "0"], "--seeds"),
    ("bench-results-file", _write("f.txt", "x"),
     ["bench", "kernels", "--quick", "--results", "f.txt"], "is a file"),
    ("app-remote", None, ["app", "--address", "0.0.0.0", "--dry-run"], "loopback"),
    ("app-bad-address", None, ["app", "--address", "example.invalid", "--dry-run"],
     "not an IP address"),
    ("app-port", None, ["app", "--port", "0", "--dry-run"], "--port 0"),
    ("app-runs-file", _write("f.txt", "x"), ["app", "--runs", "f.txt", "--dry-run"],
     "not a folder"),
]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("template")
    write_synthetic_run(base / "run", steps=200, log_every=20, warmup_steps=40)
    return base / "run"


def _cram(args: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cram", *args], cwd=cwd, env=ENV, check=False,
                          capture_output=True, text=True, timeout=300, **kw)


def _check_one_line_error(proc: subprocess.CompletedProcess, fragment: str) -> str:
    assert proc.returncode != 0, proc.stdout[-500:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert fragment in lines[0], lines[0]
    assert "internal error" not in lines[0], lines[0]
    return lines[0]


def _prepare(case, template: Path, root: Path) -> Path:
    name, setup, _, _ = case
    d = root / name
    shutil.copytree(template, d / "run")
    if setup is not None:
        setup(d)
    return d


def test_bad_inputs_table(template, tmp_path):
    """All cases, run four at a time (they are independent folders)."""
    dirs = [_prepare(case, template, tmp_path) for case in CASES]
    before = [_snapshot(d) for d in dirs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        procs = list(pool.map(lambda cd: _cram(cd[0][2], cd[1]), zip(CASES, dirs)))
    failures = []
    for case, d, snap, proc in zip(CASES, dirs, before, procs):
        try:
            _check_one_line_error(proc, case[3])
            assert _snapshot(d) == snap, "files changed, appeared or vanished"
        except AssertionError as err:
            failures.append(f"{case[0]}: {err}")
    assert not failures, "\n".join(failures)


def test_full_disk_is_one_line(tmp_path):
    """Stdout on a full device (/dev/full gives ENOSPC): one line naming what was written."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "cram", "data", "list", "--json"],
                              cwd=tmp_path, env=ENV, stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=120, check=False)
    line = _check_one_line_error(proc, "no space left on device writing standard output")
    assert proc.returncode == 3, line


def test_resume_on_foreign_shaped_checkpoint(tmp_path):
    """A checkpoint of another size dropped into a run folder: resume refuses in one line.

    And it changes nothing (cpu-tiny, 2 steps).
    """
    base = ["train", "--model", "cram", "--preset", "cpu-tiny", "--quiet"]
    for out, extra in (("a", []), ("b", ["--set", "model.d_model=48"])):
        proc = _cram([*base, "--steps", "2", "--out", out, *extra], tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("last.pt", "prev.pt"):
        if (tmp_path / "b" / "checkpoints" / name).exists():
            shutil.copy(tmp_path / "b" / "checkpoints" / name, tmp_path / "a" / "checkpoints")
    snap = _snapshot(tmp_path / "a")
    proc = _cram([*base, "--steps", "4", "--out", "a", "--resume"], tmp_path)
    _check_one_line_error(proc, "checkpoint")
    assert _snapshot(tmp_path / "a") == snap


# ------------------------------------------------------------------------------------------
# the boundary, in-process


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as err:  # noqa: BLE001 - give it a traceback like a real one
        return err


@pytest.mark.parametrize("exc, code, fragment", [
    (OSError(errno.ENOSPC, "No space left on device", "runs/x/metrics.csv"), 3,
     "no space left on device writing runs/x/metrics.csv"),
    (OSError(errno.EDQUOT, "Disk quota exceeded", "f.md"), 3, "no space left on device"),
    (PermissionError(errno.EACCES, "Permission denied", "/etc/x"), 3, "permission denied: /etc/x"),
    (OSError(errno.EROFS, "Read-only file system", "/ro/x"), 3, "read-only file system"),
    (FileNotFoundError(errno.ENOENT, "No such file", "gone.csv"), 2, "gone.csv"),
    (MemoryError(), 3, "out of memory"),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), 3, "out of memory"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                  "memory: you tried to allocate 1 bytes"), 3, "out of memory"),
    (RuntimeError("Error(s) in loading state_dict for CRAM:\n\tsize mismatch for w: copying a "
                  "param with shape [3, 48] from checkpoint"), 2,
     "checkpoint does not match the model (size mismatch for w"),
    (json.JSONDecodeError("Expecting value", "x", 0), 2, "not valid JSON"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), 2, "not UTF-8 text"),
])
def test_boundary_maps_errors(exc, code, fragment):
    from cram.cli import boundary_error

    message, got = boundary_error(_raised(exc))
    assert got == code and fragment in message and "\n" not in message


def test_boundary_names_the_file_from_the_failing_frame(tmp_path):
    from cram.cli import boundary_error

    path = tmp_path / "c.json"
    path.write_bytes(b"\xff")

    def read(path):
        return path.read_text(encoding="utf-8")

    try:
        read(path)
    except UnicodeDecodeError as err:
        message, code = boundary_error(err)
    assert str(path) in message and code == 2


def test_torch_oom_is_mapped_without_importing_torch_at_start():
    torch = pytest.importorskip("torch")
    from cram.cli import boundary_error

    message, code = boundary_error(_raised(torch.OutOfMemoryError("CUDA out of memory")))
    assert code == 3 and "out of memory" in message and "batch_size" in message
    code = "import sys, cram.cli; cram.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV,
                         timeout=120, check=False)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("exc, code, fragment", [
    (ValueError("a bug\nwith two lines"), 70, "internal error: ValueError: a bug; with two lines"),
    (OSError(errno.ENOSPC, "No space left on device", "out.csv"), 3, "no space left"),
])
def test_main_prints_one_line(monkeypatch, capsys, exc, code, fragment):
    from cram import cli
    from cram.commands import data as data_cmd

    def boom(args):
        raise exc

    monkeypatch.setattr(data_cmd, "_list", boom)
    monkeypatch.delenv("CRAM_DEBUG", raising=False)
    assert cli.main(["data", "list"]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err
    if code == 70:
        assert "CRAM_DEBUG=1" in err
    monkeypatch.setenv("CRAM_DEBUG", "1")
    with pytest.raises(type(exc)):
        cli.main(["data", "list"])


def test_argument_errors_are_one_line():
    proc = _cram(["fit", "gamma", "--method", "nope"], REPO)
    line = _check_one_line_error(proc, "invalid choice: 'nope'")
    assert "cram fit gamma --help" in line and proc.returncode == 2


# ------------------------------------------------------------------------------------------
# cram bench: never into the package, concurrent result files all kept


def _package_docs_state() -> dict[str, tuple[int, int]]:
    """Sizes and mtimes of every docs/ and results/ file and every file at the package roots."""
    out = {}
    for p in [*(REPO / "docs").rglob("*"), *(REPO / "results").rglob("*"), *REPO.glob("*"),
              *(REPO / "cram").rglob("*.md")]:
        if p.is_file():
            st = p.stat()
            out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


def test_bench_json_writes_nothing_and_results_writes_there(tmp_path):
    """``--json`` alone writes no file anywhere; ``--results DIR`` writes result files there.

    Not into the package, not into the working folder.
    """
    work = tmp_path / "work"
    (work / "runs").mkdir(parents=True)
    before = _package_docs_state()
    args = ["bench", "kernels", "--quick", "--model-runs", "runs"]
    proc = _cram([*args, "--json"], work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)
    assert [p.name for p in work.iterdir()] == ["runs"]
    assert _package_docs_state() == before
    proc = _cram([*args, "--json", "--results", "tables"], work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = sorted((work / "tables").glob("*/*.json"))
    assert {f.parent.name for f in files} == {
        "routed-attention-vs-dense-causal-sdpa-cpu-1-thread-s",
        "ct-scan-vs-the-torch-loop-cpu-1-thread-s"}
    assert all(oct(f.stat().st_mode & 0o777) == oct(0o666 & ~_umask()) for f in files)
    assert sorted(p.name for p in work.iterdir()) == ["runs", "tables"]
    assert _package_docs_state() == before


def _umask() -> int:
    from cram.core.jsonio import current_umask

    return current_umask()


def test_concurrent_result_files_lose_none(tmp_path):
    """Two processes writing 15 results each to one study in the same seconds keep all 30."""
    out = tmp_path / "results"
    script = textwrap.dedent(f"""
        import sys
        from cram.core.benchlog import record_benchmark
        for i in range(15):
            record_benchmark("one-study", "t", [{{"writer": int(sys.argv[1]), "i": i}}],
                             argv=["x"], results={str(out)!r})
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(w)], env=ENV) for w in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    from cram.core.results import load_results

    rows = [r.rows[0] for r in load_results(out)["one-study"]]
    assert sorted((r["writer"], r["i"]) for r in rows) == [(w, i) for w in range(2)
                                                           for i in range(15)]
    assert not list(out.rglob(".*"))  # no temporary file left behind


def test_default_results_folder_is_in_the_working_folder(tmp_path, monkeypatch):
    from cram.core.benchlog import record_benchmark
    from cram.core.errors import ConfigError
    from cram.core.results import default_results_dir

    monkeypatch.delenv("CRAM_RESULTS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_results_dir() == Path("results")
    path = record_benchmark("t", "t", [{"a": 1}], argv=["cram"])
    assert (tmp_path / path).is_file() and path.parts[:2] == ("results", "t")
    with pytest.raises(ConfigError, match="inside the installed package"):
        record_benchmark("t", "t", [{"a": 1}], argv=["cram"], results=REPO / "cram" / "results")
    assert not (REPO / "cram" / "results").exists()


# ------------------------------------------------------------------------------------------
# at the source: the core checks


def test_run_files_get_the_umask_mode(tmp_path):
    """Atomic writes give 0o666 less the umask (0644 under umask 022), not mkstemp's 0600."""
    from cram.core.jsonio import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        run = write_synthetic_run(tmp_path / "run")
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o600
    for name in ("config.json", "meta.json", "metrics.csv"):
        assert (run / name).stat().st_mode & 0o777 == 0o644, name


@pytest.mark.parametrize("item, fragment", [
    ("b=inf", "finite"), ("b=nan", "finite"), ("b=-inf", "finite"), ("b=1e999", "finite"),
    ("c=inf", "finite"), ("a=1e20", "expected an integer"), ("a=2.5", "expected an integer"),
    (f"a={2**63}", "out of range"),
])
def test_overrides_reject_non_finite_and_non_integers(item, fragment):
    from dataclasses import dataclass

    from cram.core.errors import ConfigError
    from cram.core.overrides import apply_overrides

    @dataclass(frozen=True)
    class Cfg:
        a: int = 1
        b: float = 1.0
        c: float | None = None

    with pytest.raises(ConfigError, match=fragment):
        apply_overrides(Cfg(), [item])
    assert apply_overrides(Cfg(), ["a=7", "b=0.5", "c=none"]) == Cfg(7, 0.5, None)


def test_load_run_refuses_duplicate_and_out_of_order_steps(tmp_path):
    from cram.core.errors import RunFolderError
    from cram.core.runs import load_run

    run = write_synthetic_run(tmp_path / "run", steps=100, log_every=20, warmup_steps=20)
    good = (run / "metrics.csv").read_text()
    assert list(load_run(run).metrics["step"]) == [0, 20, 40, 60, 80, 100]
    _dup_step(run)
    with pytest.raises(RunFolderError, match=r"metrics.csv: step 20 appears twice \(lines 3 and 4"):
        load_run(run)
    (run / "metrics.csv").write_text(good)
    _swap_steps(run)
    with pytest.raises(RunFolderError, match=r"metrics.csv: line 3: step 0 comes after step 20"):
        load_run(run)
