"""The ``TokenTask`` protocol and ``check_task``, the check every task passes before training.

A task is any object with these attributes and methods (no base class needed):

- ``name: str`` and ``vocab_size: int`` (tokens and labels lie in ``[0, vocab_size)``);
- ``n_library: int``: how many library bindings ``pattern`` can name (0 if none);
- ``sample(batch_size, rng) -> TokenBatch``: a training batch, a pure function of ``rng`` (a
  ``numpy.random.Generator``), so that a resumed run sees the same batches;
- ``eval_set(n, seed) -> TokenBatch``: the fixed evaluation set of ``n`` sequences.

Optional:

- ``extra_loss(outputs, batch) -> dict[str, Tensor]``: task-specific loss terms, already weighted.
  The trainer calls it once per step after the forward pass with the model output and the dict
  of ``TokenBatch.to_torch``; it adds the sum of the returned scalars to the loss and logs each
  as ``loss_<name>``.
- ``side_inputs: tuple[str, ...]``: names of ``extras`` a model may read as continuous inputs
  (SRCD's observed signal); empty by default.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from .batch import TaskBatchError, TaskError, TokenBatch


@runtime_checkable
class TokenTask(Protocol):
    """What the trainer needs of a token task (see the module docstring)."""

    name: str
    vocab_size: int
    n_library: int

    def sample(self, batch_size: int, rng: np.random.Generator) -> TokenBatch:
        """A training batch of ``batch_size`` sequences drawn with ``rng``."""

    def eval_set(self, n: int, seed: int) -> TokenBatch:
        """A fixed evaluation set of ``n`` sequences, determined by ``seed``."""


REQUIRED_ATTRS = ("name", "vocab_size", "n_library")
REQUIRED_METHODS = ("sample", "eval_set")


def check_task(task, batch_size: int = 2, seed: int = 0) -> None:
    """Check a task on one sampled batch and one evaluation batch, before training starts.

    Raises
    ------
    TaskError
        The object lacks part of the protocol or has a bad ``vocab_size``/``n_library``.
    TaskBatchError
        A batch is not a ``TokenBatch`` or fails ``TokenBatch.validate`` (shape, dtype, labels out
        of range, all labels -100, pattern out of range), ``sample`` ignores its ``rng``, or
        ``eval_set`` is not a function of its ``seed``.
    """
    label = f"task {getattr(task, 'name', type(task).__name__)!r}"
    missing = [a for a in REQUIRED_ATTRS if not hasattr(task, a)]
    missing += [m for m in REQUIRED_METHODS if not callable(getattr(task, m, None))]
    if missing:
        raise TaskError(f"{label} ({type(task).__name__}) does not meet the TokenTask protocol: "
                        f"missing {', '.join(missing)}")
    _check_count(label, "vocab_size", task.vocab_size, 2)
    _check_count(label, "n_library", task.n_library, 0)
    first = _call(label, "sample", task.sample, batch_size, np.random.default_rng(seed))
    first.validate(task.vocab_size, task.n_library, where=f"{label}.sample()")
    if len(first) != batch_size:
        raise TaskBatchError(f"{label}.sample({batch_size}, rng): returned {len(first)} sequences")
    again = task.sample(batch_size, np.random.default_rng(seed))
    if not (np.array_equal(first.tokens, again.tokens)
            and np.array_equal(first.labels, again.labels)):
        raise TaskBatchError(f"{label}.sample(batch_size, rng): two calls with equal rngs gave "
                             "different batches; draw every random number from rng")
    evals = _call(label, "eval_set", task.eval_set, batch_size, seed)
    evals.validate(task.vocab_size, task.n_library, where=f"{label}.eval_set()")
    again = _call(label, "eval_set", task.eval_set, batch_size, seed)
    if not (np.array_equal(evals.tokens, again.tokens)
            and np.array_equal(evals.labels, again.labels)):
        raise TaskBatchError(f"{label}.eval_set(n, seed): two calls with the same seed gave "
                             "different sets; the evaluation set must be a function of seed")


def _check_count(label: str, name: str, value, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise TaskError(f"{label}.{name}={value!r}: must be an integer >= {minimum}")


def _call(label: str, method: str, fn, *args) -> TokenBatch:
    try:
        out = fn(*args)
    except TaskError:
        raise
    except Exception as err:  # a user task's own bug: report it in one line, keep the cause
        raise TaskError(f"{label}.{method}(): raised {type(err).__name__}: {err}") from err
    if not isinstance(out, TokenBatch):
        raise TaskBatchError(f"{label}.{method}(): returned {type(out).__name__}, "
                             "expected a cram.tasks.TokenBatch")
    return out
