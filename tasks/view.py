"""The trainer's one data interface: a task, as training and evaluation read it.

The trainer, the evaluator, ``cram eval`` and the benches hold a :class:`TrainingTask` and ask
it everything that depends on the data; none of them asks *which* data it is. Two kinds of
object become one:

- a task with its **native encoding** declares the hooks below itself (``native = True``).
  SRCD's generator (``srcd_stream.SRCD``) is one: its batches carry events, keys, the observed
  signal and the lags, and its model reads them through the SRCD embedding;
- a **token task** (``protocol.TokenTask``: ``sample``/``eval_set`` of ``TokenBatch``) gets the
  token protocol's hooks from :class:`TokenView`, with every call checked
  (``guard.GuardedTask``).

The hooks (shapes: ``B`` sequences of ``T`` positions; batch dicts are ``to_torch`` output):

- ``name``, ``n_library``; ``sample(batch_size, rng)``, ``sample_at(step, batch_size, rng)``
  (the trainer's draw of batch ``step``) and ``eval_set(n, seed)``; ``check()`` (raises
  ``TaskError`` before training when the task cannot work);
- ``takes_study``: the task has the study protocol's ``probe_set`` and
  ``sample(..., library=)`` (``tasks/study.py``);
- ``data_spec``: the fields of the model's ``DataSpec`` (which embedding it builds, its sizes);
- ``loss_view(batch) -> dict``: ``answer`` (B, T), ``event`` (B, T: ``EVENT_QUERY`` where a
  query is), ``target_signal`` (B, T) and ``signal_mask`` (B, T), what the objective reads;
- ``extra_loss(outputs, batch) -> dict``: the task's own loss terms (may be empty);
- ``eval_view(batch) -> dict``: ``query``, ``answer``, ``pattern``, ``is_library`` (B, T), and
  ``lag`` (B, T) and the signal target where the task has them (``None`` otherwise);
- ``exposure_counts(batch) -> (n_library,)``: training queries per library binding;
- ``sequence_length(batch) -> int``: tokens per training sequence;
- ``per_token_metrics``: the evaluator adds attention per token against the novel floor;
- ``train_defaults``: training fields this data changes from the preset (``--set`` still wins);
- ``encoding``: the model input's encoding (``"srcd"`` or ``"tokens"``): the embedding the model
  builds, and the models a variant table refuses on it (``cram-static`` reads SRCD's events).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cram.core.events import EVENT_QUERY

from .batch import IGNORE_INDEX, QUERY_MASK, TokenBatch
from .guard import GuardedTask, unwrap

#: the attention cost gate a token task trains with unless ``--set train.cost_gate=...`` says
#: otherwise: unscored tokens hold no binding, so they pay the attention cost ungated; a query
#: pays in proportion to q̂, and in full where the model answers it with attention switched off
#: (issue 32: "familiarity-queries" until 2026-12-06, which left MQAR's library queries on
#: attention at 4x the novel floor, docs/baselines.md)
TOKEN_TRAIN_DEFAULTS = {"cost_gate": "replaceable"}


class TokenView:
    """A token task with the trainer's hooks (the token protocol's defaults)."""

    native = False
    encoding = "tokens"
    per_token_metrics = True
    train_defaults = TOKEN_TRAIN_DEFAULTS

    def __init__(self, task: Any):
        self.task = task if isinstance(task, GuardedTask) else GuardedTask(task)
        self.name = self.task.name
        self.n_library = int(self.task.n_library)
        self.vocab_size = int(self.task.vocab_size)

    def __getattr__(self, attr: str) -> Any:  # attributes a model or a stats reader asks for
        if attr == "task":
            raise AttributeError(attr)
        return getattr(self.task, attr)

    @property
    def user_task(self) -> Any:
        """The task object the user gave (unguarded)."""
        return unwrap(self.task)

    def check(self) -> None:
        """``protocol.check_task`` on the user's task, before any folder exists."""
        from .protocol import check_task

        check_task(self.user_task)

    def sample(self, batch_size: int, rng, **kwargs) -> TokenBatch:
        """The task's training batch, validated (``kwargs``: the study protocol's ``library``)."""
        return self.task.sample(batch_size, rng, **kwargs)

    def sample_at(self, step: int, batch_size: int, rng) -> TokenBatch:
        """Training batch ``step`` (the step matters only under the study protocol)."""
        return self.task.sample(batch_size, rng)

    @property
    def takes_study(self) -> bool:
        """The task has the study protocol's hooks (``probe_set``, ``sample(..., library=)``)."""
        return callable(getattr(self.user_task, "probe_set", None))

    def probe_set(self, patterns, n: int, seed: int) -> TokenBatch:
        """The study protocol's test sequences, validated."""
        return self.task.probe_set(patterns, n, seed)

    def eval_set(self, n: int, seed: int) -> TokenBatch:
        """The task's evaluation set, validated."""
        return self.task.eval_set(n, seed)

    @property
    def data_spec(self) -> dict:
        """No SRCD keys; the value head is the vocabulary head."""
        return {"n_keys": 0, "n_values": self.vocab_size, "vocab_size": self.vocab_size}

    def loss_view(self, batch: dict) -> dict:
        """The scored positions as queries, with those of the ``query_mask`` extra.

        A shortcut-closed task hides those labels, as SRCD hides unlabelled library answers;
        there is no dynamics target. Built after the forward pass; never a model input.
        """
        import torch

        labels = batch["labels"]  # (B, T)
        zeros = torch.zeros(labels.shape, device=labels.device)
        query = labels != IGNORE_INDEX  # (B, T)
        if QUERY_MASK in batch:
            query = query | batch[QUERY_MASK].bool()
        return {"answer": labels, "event": torch.where(query, EVENT_QUERY, 0),
                "target_signal": zeros, "signal_mask": zeros.bool()}

    def extra_loss(self, outputs, batch: dict) -> dict:
        """The task's ``extra_loss`` terms (checked), or none."""
        extra = getattr(self.task, "extra_loss", None)
        return extra(outputs, batch) if extra is not None else {}

    def eval_view(self, batch: dict) -> dict:
        """Queries are the scored positions; the library is what ``pattern`` names."""
        labels, pattern = batch["labels"], batch["pattern"]  # (B, T)
        return {"query": labels != IGNORE_INDEX, "answer": labels, "pattern": pattern,
                "is_library": pattern >= 0, "lag": None, "signal_mask": None,
                "target_signal": None}

    def exposure_counts(self, batch: TokenBatch) -> np.ndarray:
        """(n_library,) scored library positions per binding in ``batch``."""
        pattern = batch.pattern_or_novel()
        seen = pattern[(batch.labels != IGNORE_INDEX) & (pattern >= 0)]
        return np.bincount(seen, minlength=self.n_library)[:max(self.n_library, 0)]

    def sequence_length(self, batch: TokenBatch) -> int:
        """Tokens per training sequence."""
        return int(batch.tokens.shape[1])


def training_task(data: Any) -> Any:
    """The object the trainer holds for ``data``: a native task itself, else its token view."""
    if getattr(data, "native", False) or isinstance(data, TokenView):
        return data
    return TokenView(data)
