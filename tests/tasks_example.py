"""A user-defined token task, loaded by the tests through ``--task FILE.py:FACTORY``.

``make_task`` is the minimal task of docs/tasks.md; the other factories are broken on purpose,
one way each, so that the loader's errors can be tested.
"""

from __future__ import annotations

import numpy as np

from cram.tasks import TokenBatch


class FirstTokenRecall:
    """Random tokens; the output at the last position must name the first token."""

    name = "first-token-recall"
    n_library = 0

    def __init__(self, length: int, vocab_size: int):
        self.length, self.vocab_size = length, vocab_size

    def sample(self, batch_size: int, rng: np.random.Generator) -> TokenBatch:
        tokens = rng.integers(0, self.vocab_size, (batch_size, self.length))  # (B, T) int64
        labels = np.full_like(tokens, -100)
        labels[:, -1] = tokens[:, 0]
        return TokenBatch(tokens, labels)

    def eval_set(self, n: int, seed: int) -> TokenBatch:
        return self.sample(n, np.random.default_rng([seed, 1]))


def make_task(length: int = 32, vocab_size: int = 16) -> FirstTokenRecall:
    return FirstTokenRecall(length, vocab_size)


# ---------------------------------------------------------------- broken on purpose
NOT_CALLABLE = 3


def raising(length: int = 32):
    raise RuntimeError("cannot build the task")


class _NoSample:
    name, vocab_size, n_library = "no-sample", 8, 0

    def eval_set(self, n, seed):
        return None


def no_sample():
    return _NoSample()


class _Broken(FirstTokenRecall):
    """Breaks one thing of the batch, chosen by ``how``."""

    def __init__(self, how: str):
        super().__init__(12, 8)
        self.how = how

    def sample(self, batch_size, rng):
        batch = super().sample(batch_size, rng)
        tokens, labels = batch.tokens, batch.labels
        if self.how == "dtype":
            tokens = tokens.astype(np.int32)
        elif self.how == "shape":
            labels = labels[:, :-1]
        elif self.how == "range":
            labels = np.where(labels == -100, -100, labels + self.vocab_size)
        elif self.how == "ignored":
            labels = np.full_like(labels, -100)
        elif self.how == "unseeded":
            tokens = np.random.default_rng().integers(0, 8, tokens.shape)
        elif self.how == "tuple":
            return tokens, labels
        elif self.how == "pattern":
            return TokenBatch(tokens, labels, pattern=np.full_like(tokens, 5))
        return TokenBatch(tokens, labels)


def broken(how: str = "dtype"):
    return _Broken(how)
