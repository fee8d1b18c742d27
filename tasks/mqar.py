"""Zoology's multi-query associative recall (MQAR) in its own layout, with a library share.

The layout follows the description of MQAR in Arora et al. 2024, *Zoology: Measuring and
Improving Recall in Efficient Language Models* (ICLR, arXiv:2312.04927); the code is this
project's own. A sequence of ``length`` tokens is:

1. **the stores, all first**: ``n_pairs`` key-value pairs ``k1 v1 k2 v2 ...`` (positions
   ``0 .. 2·n_pairs − 1``), keys distinct within the sequence;
2. **the query region**, the rest of the sequence, cut into two-token slots
   (``(length − 2·n_pairs) // 2`` of them; an odd last token is filler). Every stored key comes
   back exactly once, as a bare key at the first token of a slot; everything else there is
   filler. The label at a query key is its value (what the next token would be in the store);
   nothing else is labelled, the stores never.

**Query gaps follow a power law.** The slot ``g`` (0 = the slot right after the stores) of each
query is drawn, without replacement over the slots, with weight ``(g + 1) ** (power_a − 1)``
(``power_a = 0.01``: nearly ``1/(g + 1)``, so short gaps are far more frequent than long ones;
``power_a = 1``: uniform; above 1 the bias turns toward long gaps). The drawn slots go to the
stored keys in a random order. The gap is counted from the end of the stores (our reading of the
paper: the stores form one block, so the distance from a key's store to its query is that gap
plus the store's offset from the end of the block).

**Filler.** ``n_fillers = 1`` (default) fills everything that is neither store nor query with
token 0, as in the paper's plain layout; ``n_fillers > 1`` draws filler uniformly from
``0 .. n_fillers − 1`` (random non-query tokens, kept apart from keys and values, so a key
token occurs only at its store and its query).

**Library.** A pair is from the library with probability ``library_share`` (default 0: plain
MQAR): one of ``n_library`` keys, each always bound to the same value (fixed by
``library_seed``). Otherwise its key comes from a disjoint pool of ``n_novel_keys`` and its value
is drawn fresh per sequence. ``pattern`` holds the library index at the store key, the store value
and the query key of a library pair, -1 elsewhere. ``library_labels=False`` hides the labels at
library queries in training draws (the readout shortcut closed, as in ``tasks/recall.py``) and
marks all queries in the ``query_mask`` extra; ``eval_set`` keeps every label.

Vocabulary (``vocab_size = n_fillers + n_library + n_novel_keys + n_values``; 257 at the
defaults, a key half of 128 ids and a value half of 128, as in Zoology but CPU-sized)::

    0 .. n_fillers − 1   filler (token 0 alone by default)
    then n_library       library keys
    then n_novel_keys    novel keys
    then n_values        values
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cram.core.errors import ConfigError

from ._layout import distinct_picks
from .batch import IGNORE_INDEX, QUERY_MASK, TokenBatch

EVAL_TAG = 0x3A0A  # the evaluation set's seed space, apart from training streams
PROBE_TAG = 0x9B0E  # the study protocol's test sequences


@dataclass(frozen=True)
class MQARConfig:
    """Every parameter of the MQAR task (defaults: T=128, 8 pairs, no library share)."""

    length: int = 128  # tokens per sequence T
    n_pairs: int = 8  # key-value pairs stored (and queried once each) per sequence
    power_a: float = 0.01  # query slot g drawn with weight (g + 1) ** (power_a - 1)
    library_share: float = 0.0  # share of pairs drawn from the library (0: plain MQAR)
    n_library: int = 64  # fixed library of key -> value bindings
    library_seed: int = 1234  # fixes the library values, not the stream
    n_novel_keys: int = 64  # pool of novel keys, disjoint from the library
    n_values: int = 128  # value tokens (chance accuracy 1/n_values)
    n_fillers: int = 1  # filler tokens (1: token 0 only)
    library_labels: bool = True  # False: no labels at library queries in training draws

    def __post_init__(self) -> None:
        for name, minimum in (("length", 1), ("n_pairs", 1), ("n_library", 1),
                              ("n_novel_keys", 1), ("n_values", 2), ("n_fillers", 1)):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) \
                    or value < minimum:
                raise ConfigError(f"MQARConfig.{name}={value!r}: must be an integer >= {minimum}")
        a = self.power_a
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) \
                or a <= 0:
            raise ConfigError(f"MQARConfig.power_a={a!r}: must be a finite number > 0")
        if not (isinstance(self.library_share, (int, float)) and 0 <= self.library_share <= 1):
            raise ConfigError(f"MQARConfig.library_share={self.library_share!r}: must lie in "
                              "[0, 1]")
        if not isinstance(self.library_labels, (bool, np.bool_)):
            raise ConfigError(f"MQARConfig.library_labels={self.library_labels!r}: must be true "
                              "or false")
        if not self.library_labels and self.library_share >= 1:
            raise ConfigError("MQARConfig.library_labels=False with library_share=1: no query "
                              "would carry a label")
        if self.n_pairs > self.n_novel_keys:
            raise ConfigError(f"MQARConfig.n_novel_keys={self.n_novel_keys}: fewer than "
                              f"n_pairs={self.n_pairs}, so novel keys would repeat")
        if self.library_share > 0 and self.n_pairs > self.n_library:
            raise ConfigError(f"MQARConfig.n_library={self.n_library}: fewer than "
                              f"n_pairs={self.n_pairs}, so library keys would repeat")
        if self.query_slots < self.n_pairs:
            raise ConfigError(f"MQARConfig.length={self.length}: {self.n_pairs} pairs need "
                              f"{4 * self.n_pairs} tokens ({2 * self.n_pairs} for the stores, "
                              f"{self.n_pairs} two-token query slots)")

    @property
    def query_slots(self) -> int:
        """Two-token slots after the stores, where the queries go."""
        return (self.length - 2 * self.n_pairs) // 2

    @property
    def key_base(self) -> int:
        """First token id of the keys (library keys, then novel keys)."""
        return self.n_fillers

    @property
    def value_base(self) -> int:
        """First token id of the values."""
        return self.key_base + self.n_library + self.n_novel_keys

    @property
    def vocab_size(self) -> int:
        """Number of token ids the task uses."""
        return self.value_base + self.n_values

    @property
    def query_share(self) -> float:
        """Scored tokens per token: n_pairs / length."""
        return self.n_pairs / self.length

    @property
    def floor(self) -> float:
        """Expected share of tokens that need attention: novel queries per token."""
        return self.query_share * (1 - self.library_share)

    def gap_weights(self) -> np.ndarray:
        """Unnormalised weight of each query slot g: ``(g + 1) ** (power_a - 1)``; (slots,)."""
        return np.arange(1, self.query_slots + 1, dtype=np.float64) ** (self.power_a - 1)


def weighted_distinct(rng: np.random.Generator, batch: int, weights: np.ndarray,
                      n: int) -> np.ndarray:
    """``n`` distinct indices per row, drawn one after another with probability ∝ ``weights``.

    Efraimidis-Spirakis keys (``log u / w``, largest first): the same law as drawing without
    replacement one at a time, vectorised over the batch. Returns (B, min(n, len(weights))).
    """
    keys = np.log(rng.random((batch, len(weights)))) / weights  # (B, m), all <= 0
    return np.argsort(-keys, axis=1, kind="stable")[:, :n]


class MQARTask:
    """Seeded MQAR generator meeting the ``TokenTask`` protocol and the study protocol.

    >>> task = MQARTask(MQARConfig(length=64, n_pairs=4))
    >>> task.sample(2, np.random.default_rng(0)).tokens.shape
    (2, 64)
    """

    name = "mqar"

    def __init__(self, config: MQARConfig | None = None):
        self.config = config or MQARConfig()
        c = self.config
        self.vocab_size = c.vocab_size
        self.n_library = c.n_library
        self.library_values = np.random.default_rng(c.library_seed).integers(
            0, c.n_values, c.n_library)  # (n_library,)

    def _pairs(self, rng: np.random.Generator, b: int,
               library: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Key and value token ids and library index (-1: novel) of each pair; (B, n) each."""
        c = self.config
        n = c.n_pairs
        is_lib = rng.random((b, n)) < c.library_share  # (B, n)
        pool = np.arange(c.n_library) if library is None else np.asarray(library, np.int64)
        ids, counts = np.unique(pool, return_counts=True)  # repeats in the pool weight a binding
        picks = weighted_distinct(rng, b, counts.astype(np.float64), n)  # (B, <= n)
        rank = np.cumsum(is_lib, axis=1) - 1  # (B, n) library slot j takes the rank-th pick
        lib_pattern = np.zeros((b, n), np.int64)
        if len(ids):
            lib_pattern = ids[np.take_along_axis(picks, np.maximum(rank, 0) % len(ids), axis=1)]
        # a narrowed pool with fewer bindings than library slots: the extra slots turn novel
        is_lib &= rank < len(ids)
        novel_key = distinct_picks(rng, b, c.n_novel_keys, n)  # (B, n)
        key = np.where(is_lib, c.key_base + lib_pattern, c.key_base + c.n_library + novel_key)
        value = np.where(is_lib, self.library_values[lib_pattern],
                         rng.integers(0, c.n_values, (b, n))) + c.value_base
        return key, value, np.where(is_lib, lib_pattern, -1)

    def sample(self, batch_size: int, rng: np.random.Generator | int | None = None, *,
               library_labels: bool | None = None, library: np.ndarray | None = None,
               hide: np.ndarray | None = None) -> TokenBatch:
        """Draw ``batch_size`` independent sequences (a pure function of ``rng``).

        ``library_labels`` (default: the config's) keeps the labels at library queries.
        ``library``: the library bindings a library slot may take (default: all; repeats weight
        a binding; the study protocol, ``tasks/study.py``, narrows it). ``hide``: library
        bindings whose store becomes filler, so their query is the only occurrence of the key and
        nothing in the sequence shows the value (the protocol's test and cue-answer study).
        """
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        c = self.config
        b, n = batch_size, c.n_pairs
        key, value, pattern = self._pairs(rng, b, library)  # (B, n) each
        slot = weighted_distinct(rng, b, c.gap_weights(), n)  # (B, n), in draw order
        slot = np.take_along_axis(slot, np.argsort(rng.random((b, n)), axis=1), axis=1)
        tokens = rng.integers(0, c.n_fillers, (b, c.length))  # filler everywhere, then overwrite
        labels = np.full((b, c.length), IGNORE_INDEX, np.int64)
        pattern_at = np.full((b, c.length), -1, np.int64)
        rows = np.arange(b)[:, None]
        store = 2 * np.arange(n)[None, :]  # (1, n) store key positions
        query = 2 * n + 2 * slot  # (B, n) query key positions
        shown = np.ones((b, n), bool) if hide is None else ~((pattern >= 0) & np.isin(pattern,
                                                                                       hide))
        r, i = np.nonzero(shown)  # hidden stores keep their filler tokens
        tokens[r, store[0, i]], tokens[r, store[0, i] + 1] = key[r, i], value[r, i]
        pattern_at[r, store[0, i]] = pattern_at[r, store[0, i] + 1] = pattern[r, i]
        tokens[rows, query] = key
        pattern_at[rows, query] = pattern
        unlabelled = not (c.library_labels if library_labels is None else library_labels)
        scored = (pattern < 0) if unlabelled else np.ones((b, n), bool)
        labels[np.nonzero(scored)[0], query[scored]] = value[scored]
        extras = {}
        if unlabelled:  # library queries keep no label but stay queries for the routing losses
            extras[QUERY_MASK] = np.zeros((b, c.length), bool)
            extras[QUERY_MASK][rows, query] = True
        return TokenBatch(tokens.astype(np.int64), labels, pattern_at, extras=extras)

    def eval_set(self, n: int, seed: int = 10_000) -> TokenBatch:
        """The fixed evaluation set (its seed space is tagged apart from training streams)."""
        return self.sample(n, np.random.default_rng([seed, EVAL_TAG]), library_labels=True)

    @property
    def library_slots_per_sequence(self) -> int:
        """The most library bindings one sequence holds (its pairs)."""
        return self.config.n_pairs

    def probe_set(self, patterns: np.ndarray, n: int, seed: int = 10_000) -> TokenBatch:
        """Test sequences of the study protocol: library slots from ``patterns``, stores removed.

        Library slots keep the config's ``library_share`` (as in ``tasks/recall.py``), so the
        protocol needs ``library_share > 0``.
        """
        return self.sample(n, np.random.default_rng([seed, EVAL_TAG, PROBE_TAG]),
                           library_labels=True, library=patterns, hide=patterns)
