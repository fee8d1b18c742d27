"""Faults injected into training: the run folder keeps a finite checkpoint and stays resumable.

Issue 17: NaN weights, two writers, kills before the first checkpoint, truncated checkpoints,
full disks, out of memory, argument errors found late, failed resumes, foreign checkpoints.
Everything runs at the cpu-tiny preset (seed 0 unless said), whose metrics are pinned in
tests/data/golden_cpu_tiny.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import cram
from cram.consolidation import checkpoint as ckpt_mod
from cram.consolidation.checkpoint import load_checkpoint, load_trained, nonfinite_tensors
from cram.consolidation.config import resolve
from cram.consolidation.run_writer import RunLock
from cram.consolidation.train import OutOfResources, TrainingDiverged, train
from cram.core.errors import CheckpointError, ConfigError, CramError, RunFolderError

GOLDEN = Path(__file__).parent / "data" / "golden_cpu_tiny"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TINY = ["--model", "cram", "--preset", "cpu-tiny", "--quiet"]


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "cram", *args], capture_output=True, text=True,
                          env=ENV, **kw)


def _train_tiny(out, overrides=(), model="cram", **kw):
    return train(model, resolve(model, "cpu-tiny", list(overrides)), out, progress=False, **kw)


def _metrics(run_dir) -> pd.DataFrame:
    return pd.read_csv(Path(run_dir) / "metrics.csv").drop(columns=["train_seconds"])


def _assert_golden(run_dir, model="cram") -> None:
    """Every golden column identical (columns added since, e.g. issue 13's, are allowed)."""
    golden = pd.read_csv(GOLDEN / f"{model}_metrics.csv").drop(columns=["train_seconds"])
    pd.testing.assert_frame_equal(_metrics(run_dir)[list(golden.columns)], golden)


def _status(run_dir) -> str:
    return json.loads((Path(run_dir) / "meta.json").read_text())["status"]


def _one_line_error(proc) -> str:
    assert proc.returncode not in (0, None)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, proc.stderr
    return errors[0]


# ------------------------------------------------------------------------------ non-finite steps
def test_nan_weights_keep_the_last_finite_checkpoint_which_resumes(tmp_path):
    out = tmp_path / "nan"
    sets = ["train.lr=1e6", "train.checkpoint_every=1", "train.log_every=1"]
    with pytest.raises(TrainingDiverged, match="non-finite") as first:
        _train_tiny(out, sets)
    kept = load_checkpoint(out / "checkpoints" / "last.pt")
    assert nonfinite_tensors({"model": kept["model"], "optimizer": kept["optimizer"]}) == []
    assert _status(out) == "failed"
    # the kept checkpoint loads and training continues from it: it diverges at the same step again
    with pytest.raises(TrainingDiverged) as again:
        train("cram", resolve("cram", "cpu-tiny"), out, resume=True, progress=False)
    assert str(again.value) == str(first.value)
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == kept["step"]
    assert load_trained(out).state["step"] == kept["step"]


# ------------------------------------------------------------------------------ two writers
def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    with RunLock(out):
        with pytest.raises(RunFolderError, match=f"pid {os.getpid()}"):
            _train_tiny(out)
        proc = _cli("train", *TINY, "--out", str(out))
        assert f"pid {os.getpid()}" in _one_line_error(proc)
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # the refused wrote nothing
    assert list(out.iterdir()) == []  # a released lock leaves no file behind
    _train_tiny(out)  # the lock of a finished holder is free again
    _assert_golden(out)


def test_two_concurrent_trains_on_one_folder_leave_one_consistent_run(tmp_path):
    out = tmp_path / "race"
    procs = [subprocess.Popen([sys.executable, "-m", "cram", "train", *TINY, "--out", str(out),
                               "--seed", str(seed)], env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for seed in (3, 4)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes[0] == 0 and codes[1] != 0, results
    loser = next(err for rc, err in results if rc != 0)
    assert "already exists" in loser or "another cram process" in loser
    seed = json.loads((out / "config.json").read_text())["seed"]
    assert load_checkpoint(out / "checkpoints" / "last.pt")["experiment"]["seed"] == seed
    assert pd.read_csv(out / "metrics.csv")["step"].is_unique


def test_resume_while_the_run_is_training_is_refused(tmp_path):
    out = tmp_path / "live"
    writer = subprocess.Popen([sys.executable, "-m", "cram", "train", *TINY, "--out", str(out),
                               "--set", "train.steps=400"], env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "checkpoints" / "last.pt").exists():
            time.sleep(0.05)
        proc = _cli("train", *TINY, "--out", str(out), "--resume")
        assert f"pid {writer.pid}" in _one_line_error(proc)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()


# ------------------------------------------------------------------------------ kills and restarts
def test_kill9_before_the_first_checkpoint_then_resume(tmp_path):
    out = tmp_path / "early"
    # a large evaluation set makes the step-0 evaluation (before the first save) take a while
    sets = ["--set", "train.eval_sequences=1024", "--set", "train.steps=10"]
    proc = subprocess.Popen([sys.executable, "-m", "cram", "train", *TINY, "--out", str(out),
                             *sets], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "meta.json").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "checkpoints" / "last.pt").exists(), "killed too late"
    assert _status(out) == "running"
    assert "already exists" in _one_line_error(_cli("train", *TINY, "--out", str(out), *sets))
    resumed = _cli("train", *TINY, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "no checkpoint yet" in resumed.stderr
    assert _status(out) == "finished"
    assert list(pd.read_csv(out / "metrics.csv")["step"]) == [0, 10]


@pytest.mark.slow  # 400 steps each; the default tier keeps test_faults_process.py's SIGINT and
# SIGTERM tests (both workers) and test_resume_with_steps_extends_the_run
@pytest.mark.parametrize("worker", ["thread", "process"])
def test_sigint_marks_the_run_interrupted_and_it_resumes(tmp_path, worker):
    """A time limit (`timeout -s INT`, as scripts/gpu_check.sh uses) stops a run as Ctrl-C does.

    Both signal the whole process group, the data worker process included (issue 16).
    """
    out = tmp_path / "limited"
    sets = ["--set", "train.steps=400", "--set", f"train.data_worker={worker}"]
    # SIGINT at its default in the child even when this test runs in a background job, where
    # the shell starts it ignored (and Python then installs no KeyboardInterrupt handler)
    proc = subprocess.Popen([sys.executable, "-m", "cram", "train", *TINY, "--out", str(out),
                             *sets], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoints" / "last.pt").exists():
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err and "interrupted" in err, \
        (proc.returncode, err[-2000:])
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "interrupted" and meta["error"].startswith("KeyboardInterrupt")
    resumed = _cli("train", *TINY, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert _status(out) == "finished"
    assert pd.read_csv(out / "metrics.csv")["step"].iloc[-1] == 400


def test_restart_starts_over_only_a_folder_without_checkpoint(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "config.json").write_text("{garbled")
    (out / "meta.json").write_text('{"status": "running"}')
    _train_tiny(out, restart=True)
    _assert_golden(out)
    with pytest.raises(RunFolderError, match="has checkpoints"):
        _train_tiny(out, restart=True)
    _assert_golden(out)


def test_leftover_temp_checkpoints_are_removed_on_resume(tmp_path):
    out = _train_tiny(tmp_path / "tmp")
    stale = out / "checkpoints" / ".last.x1y2.pt.tmp"
    stale.write_bytes(b"half a checkpoint")
    train("cram", resolve("cram", "cpu-tiny"), out, resume=True, progress=False)
    assert not stale.exists()
    _assert_golden(out)


# ------------------------------------------------------------------------------ broken last.pt
@pytest.mark.parametrize("damage", ["zero-byte", "truncated", "missing"])
def test_resume_falls_back_to_prev_when_last_is_broken(tmp_path, damage):
    out = _train_tiny(tmp_path / damage)
    last = out / "checkpoints" / "last.pt"
    if damage == "missing":
        last.unlink()
    else:
        last.write_bytes(b"" if damage == "zero-byte" else last.read_bytes()[:1000])
    proc = _cli("train", *TINY, "--out", str(out), "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "warning" in proc.stderr and "prev.pt" in proc.stderr and "(step 20)" in proc.stderr
    assert load_checkpoint(last)["step"] == 30
    assert (out / "checkpoints" / "last.pt.unreadable").exists() == (damage != "missing")
    _assert_golden(out)  # steps 20..30 retrained from prev.pt give the same rows


def test_both_checkpoints_broken_is_one_clear_error_and_status_stays(tmp_path):
    out = _train_tiny(tmp_path / "both")
    (out / "checkpoints" / "last.pt").write_bytes(b"")
    (out / "checkpoints" / "prev.pt").write_bytes(b"junk")
    meta = (out / "meta.json").read_bytes()
    proc = _cli("train", *TINY, "--out", str(out), "--resume")
    line = _one_line_error(proc)
    assert "no usable checkpoint" in line and "last.pt" in line and "prev.pt" in line
    assert "IndexError" not in proc.stderr
    assert (out / "meta.json").read_bytes() == meta  # a failed resume leaves the status alone


def test_failed_resume_of_a_finished_run_leaves_its_status(tmp_path):
    out = _train_tiny(tmp_path / "done")
    meta = (out / "meta.json").read_bytes()
    with pytest.raises(RunFolderError, match="trained as 'cram'"):
        train("transformer", resolve("transformer", "cpu-tiny"), out, resume=True, progress=False)
    with pytest.raises(ConfigError, match="before the checkpoint's step 30"):
        _train_tiny(out, resume=True, steps=20)
    assert (out / "meta.json").read_bytes() == meta
    assert _status(out) == "finished"


def test_resume_with_steps_extends_the_run(tmp_path):
    out = _train_tiny(tmp_path / "ext")
    proc = _cli("train", *TINY, "--out", str(out), "--resume", "--steps", "40")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "config.json").read_text())["train"]["steps"] == 40
    assert list(pd.read_csv(out / "metrics.csv")["step"]) == [0, 10, 20, 30, 40]
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 40
    assert _status(out) == "finished"


# ------------------------------------------------------------------------------ resources
def test_disk_full_while_saving_is_one_error_and_resumable(tmp_path, monkeypatch):
    out = tmp_path / "full"
    real_save, calls = torch.save, []

    def full_disk(obj, f, *a, **kw):
        calls.append(obj["step"])
        if obj["step"] == 20:
            with open(f, "wb") as fh:
                fh.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(ckpt_mod.torch, "save", full_disk)
    with pytest.raises(OutOfResources, match="no space left on device") as err:
        _train_tiny(out)
    assert len(str(err.value).splitlines()) == 1 and "--resume" in str(err.value)
    assert _status(out) == "failed"
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 10
    assert not list((out / "checkpoints").glob("*.tmp"))
    monkeypatch.setattr(ckpt_mod.torch, "save", real_save)
    train("cram", resolve("cram", "cpu-tiny"), out, resume=True, progress=False)
    _assert_golden(out)


def test_disk_full_while_logging_leaves_a_resumable_run(tmp_path, monkeypatch):
    from cram.core.runs import CsvLog

    out = tmp_path / "fulllog"
    real_append = CsvLog.append

    def append(self, rows):
        if self.path.name == "metrics.csv" and isinstance(rows, dict) and rows["step"] == 20:
            with open(self.path, "a") as fh:
                fh.write("20,train,12")  # a partial row, as a full disk leaves it
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        return real_append(self, rows)

    monkeypatch.setattr(CsvLog, "append", append)
    with pytest.raises(OutOfResources, match="metrics.csv"):
        _train_tiny(out)
    monkeypatch.setattr(CsvLog, "append", real_append)
    train("cram", resolve("cram", "cpu-tiny"), out, resume=True, progress=False)
    _assert_golden(out)


def test_out_of_memory_is_one_error(tmp_path, monkeypatch):
    import cram.consolidation.train as train_mod

    def oom(*a, **kw):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(train_mod, "train_step", oom)
    with pytest.raises(OutOfResources, match="out of memory on cpu at step 0"):
        _train_tiny(tmp_path / "oom")
    assert load_checkpoint(tmp_path / "oom" / "checkpoints" / "last.pt")["step"] == 0


# ------------------------------------------------------------------------------ checked up front
@pytest.mark.parametrize("kwargs, overrides, match", [
    ({}, ["train.data_shards=3"], "data_shards"),
    ({"seed": -1}, [], "seed=-1"),
    ({}, ["train.warmup_steps=5"], "retention"),
    ({}, ["train.device=cuda"], "CUDA"),
])
def test_argument_errors_come_before_the_folder(tmp_path, kwargs, overrides, match):
    if "train.device=cuda" in overrides and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match=match):
        _train_tiny(out, overrides, **kwargs)
    assert not out.exists()


def test_cli_seed_error_is_one_line_and_creates_nothing(tmp_path):
    out = tmp_path / "never"
    assert "seed" in _one_line_error(_cli("train", *TINY, "--out", str(out), "--seed", "-1"))
    assert not out.exists()


# ------------------------------------------------------------------------------ foreign checkpoints
def test_eval_refuses_a_checkpoint_of_another_model_or_size(tmp_path):
    run = _train_tiny(tmp_path / "cram")
    other = _train_tiny(tmp_path / "small", ["model.d_model=16", "train.steps=10"])
    good = load_trained(run)
    assert good.state["step"] == 30 and good.config.model.d_model == 32
    (run / "checkpoints" / "small.pt").write_bytes((other / "checkpoints" / "last.pt").read_bytes())
    with pytest.raises(CheckpointError, match="model arguments differ"):
        load_trained(run, "small.pt")
    line = _one_line_error(_cli("eval", str(run), "--checkpoint", "small.pt"))
    assert "small.pt" in line
    trans = _train_tiny(tmp_path / "t", model="transformer")
    (run / "checkpoints" / "t.pt").write_bytes((trans / "checkpoints" / "last.pt").read_bytes())
    with pytest.raises(CheckpointError, match="holds model 'transformer'"):
        load_trained(run, "t.pt")
    assert issubclass(CheckpointError, CramError)
    # the same checkpoint as last.pt: --resume refuses it in one line, status stays
    meta = (run / "meta.json").read_bytes()
    (run / "checkpoints" / "last.pt").write_bytes((other / "checkpoints" / "last.pt").read_bytes())
    with pytest.raises(RunFolderError, match="d_model"):  # the identity check (issue 33)
        train("cram", resolve("cram", "cpu-tiny"), run, resume=True, progress=False)
    assert (run / "meta.json").read_bytes() == meta
    assert cram.load_run(run).meta["status"] == "finished"
