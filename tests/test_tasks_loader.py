"""The task loader and ``check_task``: a user task from a test file, and each broken factory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cram.core.errors import CramError
from cram.tasks import (
    TaskBatchError,
    TaskError,
    TaskLoadError,
    TokenTask,
    check_task,
    get_task,
    list_tasks,
    load_task,
)

EXAMPLE = Path(__file__).parent / "tasks_example.py"


def test_user_task_loads_from_a_file_with_coerced_args():
    task = load_task(f"{EXAMPLE}:make_task", ["length=16", "vocab_size=9"])
    assert (task.length, task.vocab_size) == (16, 9)
    assert isinstance(task.length, int)
    assert isinstance(task, TokenTask)
    batch = task.sample(3, np.random.default_rng(0))
    assert batch.tokens.shape == (3, 16)
    assert (batch.labels[:, -1] == batch.tokens[:, 0]).all()


def test_user_task_loads_from_a_module_and_a_mapping():
    task = load_task("tasks_example:make_task", {"length": "8"})
    assert task.length == 8 and task.vocab_size == 16


@pytest.mark.parametrize("spec, args, match", [
    ("missing_dir/nope.py:make_task", [], "no such file"),
    ("EXAMPLE:absent", [], "has no 'absent'; callables there: .*make_task"),
    ("EXAMPLE:NOT_CALLABLE", [], "is a int, not a factory"),
    ("EXAMPLE:raising", [], "the factory raised RuntimeError: cannot build the task"),
    ("EXAMPLE:make_task", ["width=3"], "no parameter 'width'; it takes length, vocab_size"),
    ("EXAMPLE:make_task", ["length=abc"], r"--task-arg length='abc': expected int"),
    ("EXAMPLE:make_task", ["length"], "expected key=value"),
    ("no_such_module_xyz:make", [], "no module 'no_such_module_xyz'"),
    ("no-such-task", [], "unknown built-in task; known: recall-unmarked"),
    (":make_task", [], "expected FILE.py:FACTORY"),
])
def test_load_errors_name_what_is_wrong(spec, args, match):
    with pytest.raises(TaskLoadError, match=match) as info:
        load_task(spec.replace("EXAMPLE", str(EXAMPLE)), args)
    assert isinstance(info.value, CramError) and "\n" not in str(info.value)


@pytest.mark.parametrize("how, error, match", [
    ("dtype", TaskBatchError, r"\.tokens: expected dtype int64, got int32"),
    ("shape", TaskBatchError, r"\.labels: expected shape \(2, 12\), got \(2, 11\)"),
    ("range", TaskBatchError, r"\.labels\[0, 11\] = \d+: must lie in \[0, 8\) or -100"),
    ("ignored", TaskBatchError, "every label is -100"),
    ("unseeded", TaskBatchError, "equal rngs gave different batches"),
    ("tuple", TaskBatchError, "returned tuple, expected a cram.tasks.TokenBatch"),
    ("pattern", TaskBatchError, r"\.pattern\[0, 0\] = 5: must lie in -1 or \[0, 0\)"),
])
def test_bad_batches_are_caught_before_training(how, error, match):
    with pytest.raises(error, match=match):
        load_task(f"{EXAMPLE}:broken", [f"how={how}"])


def test_an_object_outside_the_protocol_is_named():
    with pytest.raises(TaskError, match=r"'no-sample' \(_NoSample\) does not meet the TokenTask "
                                        "protocol: missing sample"):
        load_task(f"{EXAMPLE}:no_sample")


def test_a_task_that_raises_while_sampling_is_reported_in_one_line():
    class Exploding:
        name, vocab_size, n_library = "boom", 4, 0

        def sample(self, batch_size, rng):
            raise KeyError("oops")

        def eval_set(self, n, seed):
            raise KeyError("oops")

    with pytest.raises(TaskError, match=r"task 'boom'\.sample\(\): raised KeyError"):
        check_task(Exploding())


def test_bad_vocab_size_is_rejected():
    task = load_task(f"{EXAMPLE}:make_task", check=False)
    task.vocab_size = 1
    with pytest.raises(TaskError, match=r"vocab_size=1: must be an integer >= 2"):
        check_task(task)


def test_builtins_are_listed_and_pass_the_check():
    names = list_tasks()
    assert set(names) == {"recall-unmarked", "recall-marked", "phrases", "mqar", "srcd"}
    for name in names:
        args = ["length=128"] if name != "srcd" else ["length=128", "query_rate=0.05"]
        task = load_task(name, args)  # runs check_task
        assert task.name == name
        assert task.sample(2, np.random.default_rng(0)).tokens.shape[0] == 2


def test_builtin_args_are_checked_against_their_config():
    assert get_task("recall-unmarked", length=96).config.length == 96
    assert load_task("phrases", ["library_share=0.25"]).config.library_share == 0.25
    assert load_task("srcd", ["length=64", "marked=false"]).marked is False
    with pytest.raises(CramError, match="library_share=1.5: must lie in"):
        load_task("recall-unmarked", ["library_share=1.5"])
    with pytest.raises(TaskLoadError, match="unexpected keyword argument 'width'"):
        load_task("phrases", ["width=2"])


def test_importing_tasks_loads_no_model_consolidation_or_torch():
    import subprocess
    import sys

    code = ("import sys, cram.tasks; bad = [m for m in sys.modules if m == 'torch' or "
            "m.startswith(('cram.models', 'cram.consolidation', 'cram.commands'))]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
