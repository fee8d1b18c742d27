"""Process-level faults ("A run folder is data, not code"): signals, hung and noisy tasks, kill -9.

- SIGTERM stops ``cram train`` as Ctrl-C does: status ``interrupted``, no ``.lock``, exit 143,
  one line on stderr, and no data worker process left behind.
- A task whose ``sample`` never returns (in the prefetch thread or the worker process) does not
  keep Ctrl-C or SIGTERM from ending the process within seconds; ``kill -9`` of the trainer
  takes such a worker down too.
- A task that prints to stdout leaves ``--json`` one JSON document.
- ``kill -9`` of ``cram app`` takes its Streamlit server down (Linux ``PR_SET_PDEATHSIG``).

Every run is a ``python -m cram`` subprocess at the cpu-tiny preset, signalled from here.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TINY = ["--model", "cram", "--preset", "cpu-tiny", "--quiet"]
EXIT = {"SIGINT": 130, "SIGTERM": 143}
#: seconds from the signal to the exit of the process: "promptly". A stuck data worker used to
#: cost the DataLoader's 5 s join before the exit even began (a stuck thread: forever)
PROMPT = 5.0

needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

TASK = '''
    import os
    import sys
    import threading
    import time

    import numpy as np

    sys.path.insert(0, {tests!r})
    from tasks_example import FirstTokenRecall


    class Task(FirstTokenRecall):
        """first-token recall whose sample hangs after ``hang_after`` calls, or prints."""

        calls = 0

        def __init__(self, hang_after, noisy, marker):
            super().__init__(16, 8)
            self.hang_after, self.noisy, self.marker = hang_after, noisy, marker

        def sample(self, batch_size, rng):
            Task.calls += 1
            if self.noisy:
                print("task: sampling a batch")  # the Python level
                os.write(1, b"task: raw bytes on descriptor 1\\n")  # the descriptor level
            if 0 < self.hang_after < Task.calls:
                # written whole, then renamed: the test reads the marker as soon as it exists
                partial = f"{{self.marker}}.{{os.getpid()}}.partial"
                with open(partial, "w") as f:
                    f.write(f"{{os.getpid()}} {{threading.current_thread().name}}\\n")
                os.replace(partial, self.marker)
                time.sleep(3600)
            return super().sample(batch_size, rng)

        def eval_set(self, n, seed):  # never hangs: the fixed set is drawn in the main thread
            return FirstTokenRecall.sample(self, n, np.random.default_rng([seed, 1]))


    def make(hang_after: int = 0, noisy: bool = False, marker: str = "") -> Task:
        return Task(hang_after, noisy, marker)
'''


def _task_file(tmp_path: Path) -> Path:
    path = tmp_path / "process_task.py"
    path.write_text(textwrap.dedent(TASK.format(tests=str(Path(__file__).parent))))
    return path


def _start(args: list[str]) -> subprocess.Popen:
    """``python -m cram ARGS`` in its own process group, with SIGINT at its default.

    (A test run in a background job would otherwise start it with SIGINT ignored.)
    """
    return subprocess.Popen([sys.executable, "-m", "cram", *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None or time.time() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the data worker too
            out, err = proc.communicate()
            pytest.fail(f"{path} never appeared (exit {proc.returncode}): {err[-2000:]}")
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return out


def _gone(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` has exited (or is a zombie) within ``timeout`` s."""
    deadline = time.time() + timeout
    while True:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX":
                return True
        except (OSError, IndexError):
            return True
        if time.time() > deadline:
            return False
        time.sleep(0.1)


def _stop(proc: subprocess.Popen, signame: str, group: bool) -> tuple[str, float]:
    """Send ``signame`` to ``proc`` (or its group); return its stderr and seconds to exit."""
    t0 = time.time()
    (os.killpg if group else os.kill)(proc.pid, getattr(signal, signame))
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        pytest.fail(f"still running 60 s after {signame}: {err[-2000:]}")
    return err, time.time() - t0


def _assert_interrupted(run: Path, proc: subprocess.Popen, err: str, signame: str) -> None:
    assert proc.returncode == EXIT[signame], (proc.returncode, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    lines = [line for line in err.splitlines() if line.strip()]
    wanted = "cram: interrupted" if signame == "SIGINT" else "cram: terminated (SIGTERM)"
    assert lines[-1:] == [wanted] and sum("cram:" in line for line in lines) == 1, err[-2000:]
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "interrupted", meta
    assert meta["error"].startswith("KeyboardInterrupt" if signame == "SIGINT" else "Terminated")
    assert not (run / ".lock").exists()


# ------------------------------------------------------------------------------ 1. SIGTERM
@needs_proc
@pytest.mark.parametrize("worker,group", [("thread", False), ("process", True)])
def test_sigterm_marks_the_run_interrupted_and_removes_the_lock(tmp_path, worker, group):
    """SIGTERM (to the process, or to its group as ``timeout`` and schedulers send it)."""
    out = tmp_path / "run"
    proc = _start(["train", *TINY, "--out", str(out), "--set", "train.steps=400",
                   "--set", f"train.data_worker={worker}"])
    _wait_for(out / "checkpoints" / "last.pt", proc)
    deadline = time.time() + 60
    while worker == "process" and not _children(proc.pid) and time.time() < deadline:
        time.sleep(0.05)  # the worker starts with the first batch, after the step-0 checkpoint
    workers = _children(proc.pid)
    assert workers if worker == "process" else not workers
    err, _ = _stop(proc, "SIGTERM", group)
    _assert_interrupted(out, proc, err, "SIGTERM")
    assert all(_gone(pid, 10) for pid in workers), "the data worker outlived the trainer"


# ------------------------------------------------------------------------------ 2. a hung task
@needs_proc
@pytest.mark.parametrize("worker,signame,group", [("thread", "SIGINT", False),
                                                  ("thread", "SIGTERM", True),
                                                  ("process", "SIGINT", False),
                                                  ("process", "SIGTERM", True)])
def test_a_hanging_task_sample_does_not_block_the_signal(tmp_path, worker, signame, group):
    """The prefetch thread or worker hangs in the task's ``sample``: the signal still ends it.

    (The thread used to be joined on close and at exit, forever; the worker process after the
    DataLoader's 5 s join.)
    """
    out, marker = tmp_path / "run", tmp_path / "hanging"
    proc = _start(["train", *TINY, "--out", str(out), "--task", f"{_task_file(tmp_path)}:make",
                   "--task-arg", "hang_after=12", "--task-arg", f"marker={marker}",
                   "--set", f"train.data_worker={worker}"])
    _wait_for(marker, proc)
    pid, thread = marker.read_text().split()[:2]
    assert (int(pid), thread) != (proc.pid, "MainThread"), "the hang is not in the data path"
    workers = _children(proc.pid)
    err, seconds = _stop(proc, signame, group)
    _assert_interrupted(out, proc, err, signame)
    assert seconds < PROMPT, f"{seconds:.1f} s from {signame} to exit"
    assert all(_gone(pid, 10) for pid in workers), "the data worker outlived the trainer"


@needs_proc
def test_kill9_of_the_trainer_takes_its_hung_data_worker_down(tmp_path):
    """``kill -9`` runs no handler: the kernel kills the worker (``PR_SET_PDEATHSIG``, Linux).

    (A worker stuck in ``sample`` never reaches the DataLoader's own parent check.)
    """
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux's")
    out, marker = tmp_path / "run", tmp_path / "hanging"
    proc = _start(["train", *TINY, "--out", str(out), "--task", f"{_task_file(tmp_path)}:make",
                   "--task-arg", "hang_after=12", "--task-arg", f"marker={marker}",
                   "--set", "train.data_worker=process"])
    _wait_for(marker, proc)
    worker = int(marker.read_text().split()[0])
    assert worker in _children(proc.pid)
    proc.kill()
    proc.wait()  # not communicate(): a surviving worker holds the pipes open
    proc.stdout.close()
    proc.stderr.close()
    try:
        assert _gone(worker, 10), "the hung data worker outlived kill -9 of the trainer"
    finally:
        if not _gone(worker, 0):
            os.kill(worker, signal.SIGKILL)


# ------------------------------------------------------------------------------ 3. --json
def _one_json_document(proc: subprocess.Popen):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert out.count("\n") == 1, out[:2000]
    assert "task: sampling a batch" in err and "task: raw bytes" in err
    return json.loads(out)


def test_a_task_that_prints_leaves_json_one_document(tmp_path):
    """``train``, ``eval`` and ``bench srcd`` with ``--json`` and a task that writes to stdout.

    It prints (Python's stdout) and writes to descriptor 1, in the main process (the task check,
    ``eval``), in the data worker process (``train``) and in the prefetch thread (``bench``).
    """
    spec = [f"{_task_file(tmp_path)}:make", "--task-arg", "noisy=true"]
    run = tmp_path / "run"

    def cram(*args):
        return subprocess.Popen([sys.executable, "-m", "cram", *args], env=ENV, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    trained = cram("train", *TINY, "--out", str(run), "--task", *spec, "--steps", "4",
                   "--set", "train.data_worker=process", "--json")
    bench = cram("bench", "srcd", "--preset", "cpu-tiny", "--models", "cram", "--seeds", "1",
                 "--runs-dir", str(tmp_path / "bench"), "--infer-length", "0", "--quiet",
                 "--task", *spec, "--set", "train.steps=4", "--json")
    doc = _one_json_document(trained)
    assert doc["step"] == 4 and doc["run"] == str(run)
    assert _one_json_document(cram("eval", str(run), "--task", *spec, "--json"))["step"] == 4
    assert [row["model"] for row in _one_json_document(bench)] == ["cram"]


# ------------------------------------------------------------------------------ 4. kill -9
@needs_proc
def test_a_child_started_with_die_with_this_process_dies_with_its_parent():
    """The ``preexec_fn`` of ``cram app``'s server, on a plain child (``sleep 60``)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux's")
    code = ("import subprocess, time\n"
            "from cram.commands.app import die_with_this_process\n"
            "p = subprocess.Popen(['sleep', '60'], start_new_session=True,\n"
            "                     preexec_fn=die_with_this_process())\n"
            "print(p.pid, flush=True)\n"
            "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        line = parent.stdout.readline()
        assert line.strip().isdigit(), parent.stderr.read()[-2000:]
        child = int(line)
        assert not _gone(child, 0)
    finally:
        parent.kill()
        parent.communicate()
    assert _gone(child, 10), "the child outlived its parent's kill -9"


@needs_proc
def test_kill9_of_cram_app_stops_its_server(tmp_path):
    """``kill -9`` of ``cram app`` (no handler runs): its Streamlit server stops answering."""
    import socket
    import urllib.request

    pytest.importorskip("streamlit")
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux's")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    health = f"http://127.0.0.1:{port}/_stcore/health"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(health, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    proc = subprocess.Popen([sys.executable, "-m", "cram", "app", "--runs", str(tmp_path),
                             "--port", str(port)], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    servers = []
    try:
        deadline = time.time() + 90
        while not answers():
            assert proc.poll() is None and time.time() < deadline, "server did not start"
            time.sleep(0.3)
        servers = _children(proc.pid)
        assert servers
    finally:
        proc.kill()
        proc.wait()
    try:
        assert all(_gone(pid, 10) for pid in servers), "the server outlived kill -9 of cram app"
        assert not answers()
    finally:
        for pid in servers:
            if not _gone(pid, 0):
                os.killpg(pid, signal.SIGKILL)


def test_a_worker_killed_by_sigterm_first_reads_as_terminated():
    """A data worker killed by the group's SIGTERM, seen first, is a termination (exit 143).

    The race seen under load: the worker dies before its handler exists, and the DataLoader's
    RuntimeError reaches the main thread before the main process's own SIGTERM handler runs.
    """
    from cram.consolidation.train import _worker_terminated
    from cram.core.errors import Terminated

    err = RuntimeError("DataLoader worker (pid 28401) is killed by signal: Terminated. ")
    assert isinstance(_worker_terminated(err), Terminated)
    assert _worker_terminated(RuntimeError("DataLoader worker (pid 1) is killed by signal: "
                                           "Killed. ")) is None  # kill -9: a failure, not a stop
    assert _worker_terminated(ValueError("killed by signal: Terminated")) is None
