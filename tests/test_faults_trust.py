"""A run folder is data, not code: consent before task code, one identity check, exit codes.

Resumes that destroy nothing are here too.

Each test reproduces one case of a hostile or careless user (issue 33) at the cpu-tiny preset.
Security cases look for the side effect itself (a file the planted code would write, the target
of a planted link), not only for the error message.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import cram
from cram.consolidation import checkpoint as ckpt_mod
from cram.consolidation.checkpoint import load_trained
from cram.core.errors import CramError, ResourceError, RunFolderError
from cram.experiments.bench import ensure_run, finished_same_run
from cram.tasks import TaskError, check_task
from cram.tasks.batch import TaskLoadError

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TINY = ["--preset", "cpu-tiny", "--quiet"]

TASK_FILE = '''
import numpy as np
from cram.tasks import TokenBatch


class FirstToken:
    name, n_library = "first-token", 0

    def __init__(self, length=16, vocab_size=16, fail_at=-1, how="raise", eval_length=None):
        self.length, self.vocab_size, self.fail_at, self.how = length, vocab_size, fail_at, how
        self.eval_length, self.calls = eval_length or length, 0

    def _draw(self, batch_size, rng, length):
        tokens = rng.integers(0, self.vocab_size, (batch_size, length))
        labels = np.full_like(tokens, -100)
        labels[:, -1] = tokens[:, 0]
        return TokenBatch(tokens, labels)

    def sample(self, batch_size, rng):
        self.calls += 1
        batch = self._draw(batch_size, rng, self.length)
        if self.fail_at >= 0 and self.calls > self.fail_at:
            if self.how == "raise":
                raise ValueError("the generator ran dry")
            if self.how == "exit":
                import sys
                sys.exit(0)
            if self.how == "range":
                batch.labels[:, -1] = self.vocab_size + 3
            if self.how == "print":
                print("a task's own chatter")
        return batch

    def eval_set(self, n, seed):
        return self._draw(n, np.random.default_rng([seed, 1]), self.eval_length)

    def extra_loss(self, outputs, batch):
        if self.how == "float":
            return {"aux_task": 0.5}
        if self.how == "value":
            return {"value": outputs.value_logits.sum() * 0.0}
        return {}


def make(length: int = 16, vocab_size: int = 16, fail_at: int = -1, how: str = "raise",
         eval_length: int = 0):
    return FirstToken(length, vocab_size, fail_at, how, eval_length or None)
'''


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cram", *args], capture_output=True, text=True,
                          env=ENV, cwd=cwd)


def _one_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def _task_file(folder: Path, name: str = "mytask.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(TASK_FILE)
    return path


def _train(out, model="cram", seed=0, task=None, task_args=(), overrides=(), **kw):
    return cram.train(model, out=out, preset="cpu-tiny", seed=seed, task=task,
                      task_args=task_args, overrides=list(overrides), progress=False, **kw)


def _status(run) -> str:
    return json.loads((Path(run) / "meta.json").read_text())["status"]


def _snapshot(run) -> dict:
    return {p.relative_to(run): p.read_bytes() for p in sorted(Path(run).rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def srcd_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("srcd") / "run")


@pytest.fixture(scope="module")
def file_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("filetask")
    task = _task_file(folder / "code")
    return _train(folder / "run", task=f"{task}:make"), task


# ------------------------------------------------------------------------- consent before code
def _plant(run: Path, task: dict, into_checkpoint: bool) -> None:
    config = json.loads((run / "config.json").read_text())
    config["task"] = task
    (run / "config.json").write_text(json.dumps(config))
    if into_checkpoint:  # a hostile folder forges the checkpoint's record as well
        path = run / "checkpoints" / "last.pt"
        state = torch.load(path, weights_only=True)
        state["task"] = task
        torch.save(state, path)


INJECTIONS = [
    {"spec": "subprocess:getoutput", "args": {"cmd": "id > PWNED"}, "name": "x",
     "vocab_size": 16, "n_library": 0},
    {"kind": "module", "spec": "subprocess:getoutput", "module": "subprocess",
     "factory": "getoutput", "args": {"cmd": "id > PWNED"}, "name": "x", "vocab_size": 16,
     "n_library": 0},
    {"kind": "builtin", "builtin": "subprocess:getoutput", "spec": "subprocess:getoutput",
     "args": {"cmd": "id > PWNED"}, "name": "x", "vocab_size": 16, "n_library": 0},
]


@pytest.mark.parametrize("forged_checkpoint", [False, True])
@pytest.mark.parametrize("planted", range(len(INJECTIONS)))
def test_a_task_spec_in_config_json_never_runs(file_run, tmp_path, planted, forged_checkpoint):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(file_run[0], run)
    _plant(run, INJECTIONS[planted], forged_checkpoint)
    before = _snapshot(run)
    for argv in (["eval", str(run)], ["train", "--resume", "--out", str(run), *TINY]):
        proc = _cli(*argv, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        _one_line(proc)
        assert not (tmp_path / "PWNED").exists()
    assert _snapshot(run) == before


def test_a_file_task_is_recorded_with_its_resolved_path_and_hash(file_run):
    run, task = file_run
    record = json.loads((run / "config.json").read_text())["task"]
    assert record["kind"] == "file" and record["path"] == str(task.resolve())
    assert record["spec"] == f"{task.resolve()}:make"
    import hashlib

    assert record["sha256"] == hashlib.sha256(task.read_bytes()).hexdigest()
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["task"] == record


def test_eval_of_a_file_task_needs_consent_and_works_from_any_folder(file_run, tmp_path):
    run, task = file_run
    line = _one_line(_cli("eval", str(run), cwd=tmp_path))
    assert "--task" in line and "--trust-task" in line
    named = _cli("eval", str(run), "--json", "--task", f"{task}:make", cwd=tmp_path)
    trusted = _cli("eval", str(run), "--json", "--trust-task", cwd=tmp_path)
    assert named.returncode == 0 and trusted.returncode == 0, named.stderr + trusted.stderr
    last = pd.read_csv(run / "metrics.csv").iloc[-1]
    for proc in (named, trusted):
        assert json.loads(proc.stdout)["retrieval_acc"] == pytest.approx(last["retrieval_acc"])


def test_an_edited_task_file_is_refused_before_it_is_imported(tmp_path):
    task = _task_file(tmp_path / "code")
    run = _train(tmp_path / "run", task=f"{task}:make")
    task.write_text(TASK_FILE + "\nopen(__file__ + '.RAN', 'w').close()\n")
    for argv in (["eval", str(run), "--trust-task"], ["eval", str(run), "--task", f"{task}:make"],
                 ["train", "--resume", "--out", str(run), "--trust-task", *TINY]):
        line = _one_line(_cli(*argv, cwd=tmp_path))
        assert "SHA-256" in line and str(task) in line
        assert not Path(str(task) + ".RAN").exists()


def test_resume_refuses_another_file_of_the_same_name(tmp_path):
    task = _task_file(tmp_path / "a")
    run = _train(tmp_path / "run", task=f"{task}:make", overrides=["train.steps=10"])
    other = _task_file(tmp_path / "b")
    other.write_text(TASK_FILE.replace('"first-token"', '"other-token"'))
    with pytest.raises(TaskLoadError, match="differs"):
        _train(run, task=f"{other}:make", resume=True, steps=20)
    moved = _task_file(tmp_path / "moved")  # the same content elsewhere is the same task
    _train(run, task=f"{moved}:make", resume=True, steps=20)
    assert _status(run) == "finished"


def test_resume_with_another_task_is_refused_and_changes_nothing(tmp_path):
    run = _train(tmp_path / "run", task="recall-marked", task_args=["length=48"],
                 overrides=["train.steps=10"])
    before = _snapshot(run)
    for task, args in (("recall-unmarked", ()), ("recall-marked", ["length=64"])):
        with pytest.raises(TaskLoadError, match="resume"):
            _train(run, task=task, task_args=args, resume=True, steps=20)
    assert _snapshot(run) == before
    _train(run, task="recall-marked", resume=True, steps=20)  # the recorded task: fine
    assert json.loads((run / "config.json").read_text())["task"]["builtin"] == "recall-marked"
    # the recorded arguments named again (a bench resuming its own partial run) are the same
    # task: continued, not refused
    _train(run, task="recall-marked", task_args=["length=48"], resume=True, steps=30)
    assert _status(run) == "finished"
    assert json.loads((run / "config.json").read_text())["task"]["args"] == {"length": "48"}


def test_resume_of_an_srcd_run_refuses_a_task(srcd_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(srcd_run, run)
    with pytest.raises(CramError, match="SRCD"):
        _train(run, task="recall-marked", resume=True, steps=40)


# ------------------------------------------------------------------------------ symbolic links
def test_a_symlinked_lock_never_truncates_its_target(srcd_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(srcd_run, run)
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    (run / ".lock").symlink_to(precious)
    proc = _cli("train", "--resume", "--out", str(run), "--steps", "40", *TINY)
    assert proc.returncode == 2 and "symbolic link" in _one_line(proc)
    assert precious.read_text() == "keep me\n"
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / ".lock").symlink_to(precious)
    proc = _cli("train", "--model", "cram", "--out", str(fresh), *TINY)
    assert proc.returncode == 2 and "symbolic link" in _one_line(proc)
    assert precious.read_text() == "keep me\n"


def test_a_symlinked_metrics_file_is_refused(srcd_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(srcd_run, run)
    target = tmp_path / "elsewhere.csv"
    original = (run / "metrics.csv").read_text()
    target.write_text(original)
    (run / "metrics.csv").unlink()
    (run / "metrics.csv").symlink_to(target)
    with pytest.raises(RunFolderError, match="symbolic link"):
        _train(run, resume=True, steps=40)
    assert target.read_text() == original


# ------------------------------------------------------------------------ one identity check
def test_bench_cache_never_reports_another_configuration(tmp_path):
    run_dir = tmp_path / "cram-s1"
    ensure_run("cram", "cpu-tiny", 1, run_dir, ["data.key_encoding=vector"], progress=False)
    before = _snapshot(run_dir)
    with pytest.raises(RunFolderError, match="key_encoding"):
        ensure_run("cram", "cpu-tiny", 1, run_dir, [], progress=False)
    with pytest.raises(RunFolderError, match="seed"):
        ensure_run("cram", "cpu-tiny", 2, run_dir, ["data.key_encoding=vector"], progress=False)
    assert _snapshot(run_dir) == before
    assert ensure_run("cram", "cpu-tiny", 1, run_dir, ["data.key_encoding=vector"],
                      progress=False) == run_dir  # the same experiment: reused
    assert _snapshot(run_dir) == before
    # the transfer study's shared cache asks the same question
    assert finished_same_run(run_dir, "cram", "cpu-tiny", 1, ["data.key_encoding=vector"])
    assert not finished_same_run(run_dir, "cram", "cpu-tiny", 1, [])


def test_bench_cache_of_a_token_task_checks_the_task(tmp_path):
    run_dir = tmp_path / "t"
    ensure_run("cram", "cpu-tiny", 0, run_dir, ["train.steps=10"], progress=False,
               task="recall-marked", task_args=["length=48"])
    with pytest.raises(RunFolderError, match="task"):
        ensure_run("cram", "cpu-tiny", 0, run_dir, ["train.steps=10"], progress=False,
                   task="recall-unmarked", task_args=["length=48"])


@pytest.mark.parametrize("field, value", [("seed", 5), ("train.lr", 0.5),
                                          ("data.library_share", 0.9)])
def test_an_edited_config_json_is_refused_by_resume_and_eval(srcd_run, tmp_path, field, value):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(srcd_run, run)
    config = json.loads((run / "config.json").read_text())
    section, _, key = field.rpartition(".")
    (config[section] if section else config)[key] = value
    (run / "config.json").write_text(json.dumps(config))
    before = _snapshot(run)
    with pytest.raises(RunFolderError, match=key):
        load_trained(run)
    with pytest.raises(RunFolderError, match=key):
        _train(run, resume=True, steps=40)
    assert _snapshot(run) == before


def test_a_checkpoint_of_another_seed_is_refused(srcd_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(srcd_run, run)
    other = _train(tmp_path / "seed1", seed=1)
    (run / "checkpoints" / "last.pt").write_bytes((other / "checkpoints" / "last.pt").read_bytes())
    with pytest.raises(RunFolderError, match="seed"):
        load_trained(run)
    proc = _cli("eval", str(run))
    assert proc.returncode == 2 and "seed" in _one_line(proc)
    with pytest.raises(RunFolderError, match="seed"):
        _train(run, resume=True, steps=40)


def test_a_newer_schema_is_refused_and_its_marker_kept(srcd_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(srcd_run, run)
    meta = json.loads((run / "meta.json").read_text())
    meta["schema_version"] = 7
    (run / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(RunFolderError, match="schema 7"):
        _train(run, resume=True, steps=40)
    with pytest.raises(RunFolderError, match="schema 7"):
        load_trained(run)
    assert json.loads((run / "meta.json").read_text())["schema_version"] == 7


# ---------------------------------------------------------------- a resume destroys nothing
def test_resume_without_checkpoints_never_truncates(srcd_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(srcd_run, run)
    shutil.rmtree(run / "checkpoints")
    before = _snapshot(run)
    proc = _cli("train", "--resume", "--out", str(run), *TINY)
    line = _one_line(proc)
    assert proc.returncode == 2 and "--restart" in line and "finished" in line
    assert _snapshot(run) == before
    meta = json.loads((run / "meta.json").read_text())
    meta["status"] = "failed"  # a failed run with rows past step 0: refused as well
    (run / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(RunFolderError, match="step 30"):
        _train(run, resume=True)
    assert _cli("train", "--restart", "--model", "cram", "--out", str(run), *TINY).returncode == 0
    assert list(pd.read_csv(run / "metrics.csv")["step"]) == [0, 10, 20, 30]


def test_resume_reads_the_model_from_the_run(srcd_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(srcd_run, run)
    proc = _cli("train", "--resume", "--out", str(run), "--steps", "40", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert list(pd.read_csv(run / "metrics.csv")["step"]) == [0, 10, 20, 30, 40]


# ---------------------------------------------------------------------- exit codes by cause
def test_a_failed_checkpoint_write_is_a_resource_error_and_recorded(tmp_path, monkeypatch):
    real_save = torch.save

    def failing(obj, f, *a, **kw):
        if obj["step"] == 20:  # what torch's zip writer raises when a write fails
            raise RuntimeError("[enforce fail at inline_container.cc:664] . "
                               "PytorchStreamWriter failed writing file data/3: file write failed")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(ckpt_mod.torch, "save", failing)
    with pytest.raises(ResourceError, match=r"last\.") as err:
        _train(tmp_path / "run")
    assert err.value.exit_code == 3 and len(str(err.value).splitlines()) == 1
    assert _status(tmp_path / "run") == "failed"


def test_status_is_recorded_when_the_disk_has_no_room_for_a_temp_file(tmp_path, monkeypatch):
    from cram.consolidation import run_writer

    real = run_writer.atomic_write_json

    def full(path, obj):
        if Path(path).name == "meta.json" and obj.get("status") == "failed":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, obj)

    def oom(*a, **kw):
        raise torch.OutOfMemoryError("out of memory")

    import cram.consolidation.train as train_mod

    monkeypatch.setattr(run_writer, "atomic_write_json", full)
    monkeypatch.setattr(train_mod, "train_step", oom)
    with pytest.raises(ResourceError) as err:
        _train(tmp_path / "run")
    assert err.value.exit_code == 3
    assert _status(tmp_path / "run") == "failed"


def test_a_read_only_file_system_at_folder_creation_is_exit_3(tmp_path, monkeypatch):
    real_mkdir = Path.mkdir

    def readonly(self, *a, **kw):
        if self.name == "ro":
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *a, **kw)

    monkeypatch.setattr(Path, "mkdir", readonly)
    with pytest.raises(ResourceError, match="Read-only") as err:
        _train(tmp_path / "ro")
    assert err.value.exit_code == 3 and str(tmp_path / "ro") in str(err.value)


@pytest.mark.parametrize("how, needle", [("raise", "ran dry"), ("range", "labels"),
                                         ("exit", "sys.exit(0)"), ("float", "aux_task"),
                                         ("value", "loss_value")])
def test_a_task_that_fails_later_is_named_with_its_step(tmp_path, how, needle):
    task = _task_file(tmp_path / "code")
    run = tmp_path / "run"
    fail_at = 0 if how in ("float", "value") else 12  # check_task draws 2 batches first
    proc = _cli("train", "--model", "cram", "--out", str(run), "--task", f"{task}:make",
                "--task-arg", f"fail_at={fail_at}", "--task-arg", f"how={how}", *TINY)
    line = _one_line(proc)
    assert proc.returncode == 2, line
    assert "first-token" in line and needle in line and "step" in line
    assert "please report" not in line and "internal error" not in line
    assert _status(run) == "failed"


def test_a_task_print_leaves_json_output_one_document(tmp_path):
    task = _task_file(tmp_path / "code")
    proc = _cli("train", "--model", "cram", "--out", str(tmp_path / "run"), "--task",
                f"{task}:make", "--task-arg", "fail_at=0", "--task-arg", "how=print", "--json",
                *TINY)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["step"] == 30


def test_tokens_seen_counts_training_sequences_not_the_eval_set(tmp_path):
    task = _task_file(tmp_path / "code")
    run = _train(tmp_path / "run", task=f"{task}:make", task_args=["eval_length=40"])
    metrics = pd.read_csv(run / "metrics.csv")
    batch = json.loads((run / "config.json").read_text())["train"]["batch_size"]
    assert list(metrics["tokens_seen"]) == [s * batch * 16 for s in metrics["step"]]


def test_an_eval_set_that_is_not_a_function_of_its_seed_is_refused():
    import numpy as np

    from cram.tasks import TokenBatch

    class Drifting:
        name, vocab_size, n_library = "drifting", 8, 0

        def sample(self, batch_size, rng):
            tokens = rng.integers(0, 8, (batch_size, 6))
            labels = np.full_like(tokens, -100)
            labels[:, -1] = tokens[:, 0]
            return TokenBatch(tokens, labels)

        def eval_set(self, n, seed):
            return self.sample(n, np.random.default_rng())

    with pytest.raises(TaskError, match="eval_set"):
        check_task(Drifting())



@pytest.mark.parametrize("argv", [
    ["srcd", "describe", "--seed", "-1"],
    ["srcd", "sample", "--seed", "-1"],
    ["tasks", "--seed", "-1"],
    ["redundancy", "--train-small", "--seed", "-1", "--preset", "cpu-tiny", "--out", "{out}"],
    ["bench", "srcd", "--infer-length", "-1", "--preset", "cpu-tiny", "--models", "cram",
     "--seeds", "1", "--runs-dir", "{out}", "--no-results"],
])
def test_a_negative_seed_or_length_is_one_line_and_leaves_nothing(tmp_path, argv):
    out = tmp_path / "out"
    proc = _cli(*[a.replace("{out}", str(out)) for a in argv], cwd=tmp_path)
    assert proc.returncode == 2 and "must be >= 0" in _one_line(proc)
    assert not out.exists()


def test_a_checkpoint_older_than_a_model_field_still_loads(tmp_path):
    """A model field added later (off by default) does not make an older checkpoint foreign."""
    import json

    import torch

    from cram.consolidation.checkpoint import load_trained
    from cram.consolidation.config import resolve
    from cram.consolidation.train import train

    run = train("cram", resolve("cram", "cpu-tiny", ["train.steps=10", "train.log_every=5",
                                                     "train.checkpoint_every=5"]),
                tmp_path / "old", progress=False)
    ckpt_path = run / "checkpoints" / "last.pt"
    state = torch.load(ckpt_path, weights_only=False)
    for field in ("attention_rope", "working_layout"):  # saved before them
        del state["model_args"]["config"][field]
        del state["experiment"]["model_config"][field]
    torch.save(state, ckpt_path)
    config = json.loads((run / "config.json").read_text())
    for field in ("attention_rope", "working_layout"):
        del config["model_config"][field]
    (run / "config.json").write_text(json.dumps(config))
    trained = load_trained(run)
    assert trained.config.model.attention_rope is False
    # resuming it would train on under today's defaults: refused in one line that says so
    from cram.core.errors import CramError

    before = (run / "config.json").read_bytes()
    with pytest.raises(CramError, match="written before this cram had model_config") as err:
        train("cram", resolve("cram", "cpu-tiny", ["train.steps=12", "train.log_every=5",
                                                   "train.checkpoint_every=5"]),
              run, progress=False, resume=True)
    assert "\n" not in str(err.value) and (run / "config.json").read_bytes() == before
    state["model_args"]["config"]["d_model"] = 48  # another size is still refused
    torch.save(state, ckpt_path)
    with pytest.raises(Exception, match="model arguments differ"):
        load_trained(run)


def test_a_run_older_than_a_legacy_valued_field_resumes(tmp_path):
    """A record without a LEGACY_VALUES field is the run at that value, and no other.

    It resumes; a config.json that names another value against it is refused naming the field.
    """
    import json

    import torch

    from cram.consolidation.config import TrainConfig, resolve
    from cram.consolidation.train import train
    from cram.core.errors import CramError
    from cram.core.identity import LEGACY_VALUES
    from cram.models import ModelConfig

    fields = [f.split(".", 1) for f in LEGACY_VALUES]  # (record section, field name)
    owners = {"model_config": ModelConfig(), "train": TrainConfig()}
    assert all(hasattr(owners[section], name) for section, name in fields)
    flag = {"model_config": "model", "train": "train"}
    legacy = [f"{flag[section]}.{name}={value}"
              for (section, name), value in zip(fields, LEGACY_VALUES.values(), strict=True)]
    run = train("cram", resolve("cram", "cpu-tiny", ["train.steps=10", "train.log_every=5",
                                                     "train.checkpoint_every=5", *legacy]),
                tmp_path / "old", progress=False)  # as cram ran before these fields existed
    ckpt_path = run / "checkpoints" / "last.pt"
    state = torch.load(ckpt_path, weights_only=False)
    config = json.loads((run / "config.json").read_text())
    for section, name in fields:  # the checkpoint was written before these fields existed
        if section == "model_config":
            del state["model_args"]["config"][name]
        del state["experiment"][section][name]
    torch.save(state, ckpt_path)
    edited = {**config, "model_config": {**config["model_config"], "working_dropout": 0.5}}
    (run / "config.json").write_text(json.dumps(edited))
    before = (run / "config.json").read_bytes()
    with pytest.raises(CramError, match="working_dropout") as err:
        train("cram", None, run, progress=False, resume=True, steps=12)
    assert "\n" not in str(err.value) and (run / "config.json").read_bytes() == before
    (run / "config.json").write_text(json.dumps(config))
    train("cram", None, run, progress=False, resume=True, steps=12)
    assert torch.load(ckpt_path, weights_only=False)["step"] == 12


def test_a_run_with_retired_fields_at_their_off_value_loads_and_resumes(tmp_path):
    """A field removed from cram (RETIRED_FIELDS) is dropped at its off value, refused at another.

    The run trained before the removal (config.json and checkpoint hold the field) rebuilds and
    resumes; a record holding another value is refused in one line naming the field, and nothing
    in the folder changes.
    """
    import json

    import torch

    from cram.consolidation.checkpoint import load_trained
    from cram.consolidation.config import resolve
    from cram.consolidation.train import train
    from cram.core.errors import CramError
    from cram.core.identity import RETIRED_FIELDS

    run = train("cram", resolve("cram", "cpu-tiny", ["train.steps=10", "train.log_every=5",
                                                     "train.checkpoint_every=5"]),
                tmp_path / "old", progress=False)
    ckpt_path = run / "checkpoints" / "last.pt"
    state = torch.load(ckpt_path, weights_only=False)
    config = json.loads((run / "config.json").read_text())
    for dotted, off in RETIRED_FIELDS.items():  # as a run made before the removal wrote them
        section, name = dotted.split(".", 1)
        config[section][name] = off
        state["experiment"][section][name] = off
        if section == "model_config":
            state["model_args"]["config"][name] = off
    torch.save(state, ckpt_path)
    (run / "config.json").write_text(json.dumps(config))
    assert load_trained(run).state["step"] == 10
    train("cram", None, run, progress=False, resume=True, steps=12)
    assert torch.load(ckpt_path, weights_only=False)["step"] == 12
    config = json.loads((run / "config.json").read_text())
    config["model_config"]["semantic_input"] = "stopgrad"
    (run / "config.json").write_text(json.dumps(config))
    before = (run / "config.json").read_bytes()
    with pytest.raises(CramError, match="model_config.semantic_input='stopgrad' was removed") \
            as err:
        load_trained(run)
    assert "\n" not in str(err.value) and (run / "config.json").read_bytes() == before
