"""A user task as the trainer sees it: every call checked, every failure named as the task's.

``check_task`` tests a task once before training; :class:`GuardedTask` keeps testing it while it
trains. Whatever a task's ``sample``, ``eval_set`` or ``extra_loss`` does wrong later (raises,
calls ``sys.exit``, returns a batch with labels out of range, returns a float as a loss term or a
term whose name is taken) becomes a :class:`TaskError` that names the task and the method; the
trainer adds the step. Ctrl-C (``KeyboardInterrupt``) passes through untouched.
"""

from __future__ import annotations

from typing import Any

from .batch import TaskError, TokenBatch

#: loss terms the trainer logs itself; a task's extra term may not take one of these names.
#: ``signal`` is free: a token task has no dynamics target, and one that brings its own (the
#: SRCD token view) logs it there on purpose
RESERVED_LOSS_NAMES = ("total", "value", "consolidation", "familiarity", "cost", "router",
                       "probe", "aux")


class GuardedTask:
    """``task`` with checked calls (picklable, so a worker process can draw from it)."""

    def __init__(self, task: Any):
        self.task = task
        self.name = str(getattr(task, "name", type(task).__name__))
        self.vocab_size = task.vocab_size
        self.n_library = task.n_library
        self.side_inputs = tuple(getattr(task, "side_inputs", ()) or ())
        if callable(getattr(task, "extra_loss", None)):
            self.extra_loss = self._extra_loss

    def __getattr__(self, attr: str) -> Any:  # other attributes a model or stats read
        if attr == "task":
            raise AttributeError(attr)
        return getattr(self.task, attr)

    def _call(self, method: str, *args, **kwargs) -> Any:
        try:
            return getattr(self.task, method)(*args, **kwargs)
        except (KeyboardInterrupt, TaskError):
            raise
        except BaseException as err:  # SystemExit included: a task never ends the trainer
            what = (f"called sys.exit({err.code!r})" if isinstance(err, SystemExit)
                    else f"raised {type(err).__name__}: {err}")
            raise TaskError(f"task {self.name!r}: {method}() {what}") from None

    def _batch(self, method: str, *args, **kwargs) -> TokenBatch:
        batch = self._call(method, *args, **kwargs)
        if not isinstance(batch, TokenBatch):
            raise TaskError(f"task {self.name!r}: {method}() returned {type(batch).__name__}, "
                            "expected a cram.tasks.TokenBatch")
        return batch.validate(self.vocab_size, self.n_library,
                              where=f"task {self.name!r}: {method}()")

    def sample(self, batch_size: int, rng, **kwargs) -> TokenBatch:
        """The task's training batch, validated (``kwargs``: the study protocol's ``library``)."""
        return self._batch("sample", batch_size, rng, **kwargs)

    def probe_set(self, patterns, n: int, seed: int) -> TokenBatch:
        """The study protocol's test sequences (``tasks/study.py``), validated."""
        return self._batch("probe_set", patterns, n, seed)

    def eval_set(self, n: int, seed: int) -> TokenBatch:
        """The task's evaluation set, validated."""
        return self._batch("eval_set", n, seed)

    def _extra_loss(self, outputs, batch) -> dict:
        import torch

        terms = self._call("extra_loss", outputs, batch)
        if not isinstance(terms, dict):
            raise TaskError(f"task {self.name!r}: extra_loss() returned "
                            f"{type(terms).__name__}, expected a dict of scalar tensors")
        for key, value in terms.items():
            if not isinstance(key, str) or key in RESERVED_LOSS_NAMES:
                raise TaskError(f"task {self.name!r}: extra_loss() term {key!r} clashes with the "
                                f"trainer's own loss_{key} column; rename it")
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                got = (f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor)
                       else type(value).__name__)
                raise TaskError(f"task {self.name!r}: extra_loss() term {key!r} is {got}, "
                                "expected a scalar tensor")
        return terms


def unwrap(task: Any) -> Any:
    """The user's task behind a :class:`GuardedTask` (the task itself otherwise)."""
    return task.task if isinstance(task, GuardedTask) else task
