"""SRCD as a token task: the adapter that gives ``srcd_stream.SRCD`` the token protocol.

The generator is wrapped, not changed: ``SRCDTask(generator)`` takes any object with SRCD's
``config``, ``sample(batch_size, rng)`` and ``eval_set(n, seed)`` (duck-typed, so this module
imports nothing above ``cram.tasks``; ``get_task("srcd")`` builds the generator).

Token view of one SRCD sequence of ``T`` positions (``T + n`` tokens, n = stores per sequence):

- a position without an event -> ``NONE`` (token 0);
- a store of (key k, value v) -> the key token ``k`` followed by an *inserted* value token
  ``n_keys + v`` (its ``dtau`` is 0: the same instant);
- a query of key k -> ``n_keys + n_values + k - 1`` with ``marked=True`` (SRCD's default: the
  event type folded into the token id), or the key token ``k`` itself with ``marked=False``;
  its label is ``n_keys + answer``.

``pattern`` is the library index on every token of a library binding (store key, value and
query). What the token view drops is the continuous channel: the observed signal x(τ_t) is not a
token. It travels in ``extras`` (``signal``, ``target_signal``, ``signal_mask``, plus ``lag``);
``side_inputs = ("signal",)`` declares that a model may read ``signal`` as a continuous input, and
``extra_loss`` adds SRCD's dynamics term, ``signal_weight`` times the masked MSE of the model's
``signal_pred`` against the next observation.
"""

from __future__ import annotations

import numpy as np

from cram.core.errors import ConfigError

from .batch import IGNORE_INDEX, TaskError, TokenBatch

NONE_TOKEN = 0
EVENT_STORE, EVENT_QUERY = 1, 2  # SRCD's event codes


class SRCDTask:
    """SRCD through the ``TokenTask`` protocol (see the module docstring)."""

    name = "srcd"
    side_inputs = ("signal",)
    side_outputs = ("signal_pred",)

    def __init__(self, generator, marked: bool = True, signal_weight: float = 1.0):
        c = generator.config
        if c.key_encoding != "id":
            raise ConfigError(f"SRCDConfig.key_encoding={c.key_encoding!r}: the token view needs "
                              "'id' keys (vector keys are not tokens)")
        self.generator = generator
        self.config = c
        self.marked = bool(marked)
        self.signal_weight = float(signal_weight)
        self.n_library = c.n_library
        self.value_base = c.n_keys  # key tokens are SRCD's key ids 1..n_keys-1
        self.query_base = c.n_keys + c.n_values
        self.vocab_size = self.query_base + ((c.n_keys - 1) if self.marked else 0)

    def sample(self, batch_size: int, rng: np.random.Generator | int | None = None) -> TokenBatch:
        """A training batch: SRCD's ``sample`` with the same generator, in the token view."""
        return self.tokens_of(self.generator.sample(batch_size, rng))

    def eval_set(self, n: int, seed: int = 10_000) -> TokenBatch:
        """SRCD's fixed evaluation set, in the token view."""
        return self.tokens_of(self.generator.eval_set(n, seed))

    def tokens_of(self, batch) -> TokenBatch:
        """Map an ``SRCDBatch`` (B, T) to a ``TokenBatch`` (B, T + n)."""
        c = self.config
        store = batch.event == EVENT_STORE  # (B, T)
        query = batch.event == EVENT_QUERY
        b, t = store.shape
        new = np.arange(t)[None, :] + np.cumsum(store, axis=1) - store  # (B, T) index in T + n
        width = t + int(store[0].sum())
        rows = np.broadcast_to(np.arange(b)[:, None], (b, t))
        sr, st = rows[store], new[store]  # stores' rows and token positions
        key = batch.key
        tokens = np.zeros((b, t), np.int64)
        tokens[store] = key[store]
        tokens[query] = (self.query_base - 1 + key[query]) if self.marked else key[query]
        lib_lo = 1 + c.key_shift
        is_lib_key = (key >= lib_lo) & (key < lib_lo + c.n_library)
        pattern = np.where(is_lib_key & (store | query), key - lib_lo, -1)  # (B, T)
        labels = np.where(query, self.value_base + batch.answer, IGNORE_INDEX)
        signal_mask = batch.signal_mask & ~store  # a store's target moves to its value token

        def spread(a: np.ndarray, inserted) -> np.ndarray:  # (B, T) -> (B, T + n)
            out = np.empty((b, width), a.dtype)
            out[rows, new] = a
            out[sr, st + 1] = inserted
            return out

        extras = {
            "signal": spread(batch.signal, batch.signal[store]),
            "target_signal": spread(batch.target_signal, batch.target_signal[store]),
            "signal_mask": spread(signal_mask, batch.signal_mask[store]),
            "lag": spread(batch.lag, -1),
        }
        return TokenBatch(
            tokens=spread(tokens, self.value_base + batch.value_in[store] - 1),
            labels=spread(labels, IGNORE_INDEX),
            pattern=spread(pattern, pattern[store]),
            dtau=spread(batch.dtau.astype(np.float32), np.float32(0.0)),
            extras=extras)

    def extra_loss(self, outputs, batch: dict) -> dict:
        """SRCD's dynamics term: ``{"signal": signal_weight · masked MSE}`` (a scalar tensor).

        ``outputs.signal_pred`` (B, T) is the model's next-observation prediction; ``batch`` is
        ``TokenBatch.to_torch``'s dict.
        """
        pred = getattr(outputs, "signal_pred", None)
        if pred is None:
            raise TaskError("task 'srcd': extra_loss needs outputs.signal_pred (B, T), the "
                            "model's next-observation head; this model has none")
        mask = batch["signal_mask"].to(pred.dtype)
        err = (pred.float() - batch["target_signal"]) ** 2 * mask
        return {"signal": self.signal_weight * err.sum() / mask.sum().clamp_min(1.0)}


def srcd_task(marked: bool = True, signal_weight: float = 1.0, **config) -> SRCDTask:
    """Build SRCD with ``SRCDConfig(**config)`` (its native generator, beside) and wrap it."""
    from .srcd_stream import SRCD, SRCDConfig

    return SRCDTask(SRCD(SRCDConfig(**config)), marked, signal_weight)
