"""Multi-query associative recall with a library share, queries marked or not.

A sequence is a stream of filler tokens and key-value pairs. Every binding (key -> value) appears
``1 + n_repeats`` times as the two tokens ``key value``; the first appearance stores it, and each
later one is a query: its label, at the key position, is the value (the next token). The stream
is a valid language-model corpus: the value follows every key, so a query looks exactly like a
store. With ``marked=False`` nothing in the input says which keys are queries; the model must tell
a repeated key from a new one. With ``marked=True`` a ``QUERY`` token precedes each query (the
usual MQAR layout of Zoology, Arora et al. 2023, and of H3's associative recall, Fu et al. 2023).

A share ``library_share`` of the bindings comes from a fixed library of ``n_library`` keys, each
always bound to the same value (fixed by ``library_seed``); the rest use keys from a disjoint pool
of ``n_novel_keys`` with values drawn fresh per sequence, so they must be retrieved in context.

``library_labels=False`` closes the readout shortcut (issue 15; the token twin of SRCD's
``library_answer=unlabelled``): training draws carry no label at library queries, so no path can
memorise a library key's value from its label; the value reaches a library query only through
attention to its store in the same sequence, or through a tier trained toward what attention
retrieves (the consolidation loss). ``eval_set`` keeps every label, so library accuracy measures
what training never labelled.

Vocabulary (``vocab_size = 1 + n_fillers + n_library + n_novel_keys + n_values``)::

    0                    QUERY marker (present in both variants, used only when marked)
    1 .. n_fillers       filler tokens (uniform)
    then n_library       library keys
    then n_novel_keys    novel keys
    then n_values        values
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cram.core.errors import ConfigError

from ._layout import distinct_picks, place_units, unit_starts
from .batch import IGNORE_INDEX, QUERY_MASK, TokenBatch

QUERY_TOKEN = 0
EVAL_TAG = 0xE7A2


@dataclass(frozen=True)
class RecallConfig:
    """Every parameter of the recall task (defaults: T=256, 8 bindings, half from the library)."""

    length: int = 256  # tokens per sequence T
    n_bindings: int = 8  # bindings per sequence
    n_repeats: int = 1  # queries per binding
    library_share: float = 0.5  # share of bindings drawn from the library
    n_library: int = 64  # fixed library of key -> value bindings
    library_seed: int = 1234  # fixes the library values, not the stream
    n_novel_keys: int = 512  # pool of novel keys, disjoint from the library
    n_values: int = 32  # value tokens (chance accuracy 1/n_values)
    n_fillers: int = 64  # filler tokens
    marked: bool = False  # a QUERY token before each query
    library_labels: bool = True  # False: no labels at library queries in training draws

    def __post_init__(self) -> None:
        for name, minimum in (("length", 1), ("n_bindings", 1), ("n_repeats", 1),
                              ("n_library", 1), ("n_novel_keys", 1), ("n_values", 2),
                              ("n_fillers", 1)):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) \
                    or value < minimum:
                raise ConfigError(f"RecallConfig.{name}={value!r}: must be an integer >= {minimum}")
        if not (isinstance(self.library_share, (int, float)) and 0 <= self.library_share <= 1):
            raise ConfigError(f"RecallConfig.library_share={self.library_share!r}: must lie in "
                              "[0, 1]")
        for name in ("marked", "library_labels"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ConfigError(f"RecallConfig.{name}={getattr(self, name)!r}: must be true "
                                  "or false")
        if not self.library_labels and self.library_share >= 1:
            raise ConfigError("RecallConfig.library_labels=False with library_share=1: no query "
                              "would carry a label")
        if self.n_bindings > self.n_novel_keys:
            raise ConfigError(f"RecallConfig.n_novel_keys={self.n_novel_keys}: fewer than "
                              f"n_bindings={self.n_bindings}, so novel keys would repeat")
        if self.n_fill < 0:
            raise ConfigError(f"RecallConfig.length={self.length}: {self.n_bindings} bindings "
                              f"need {self.length - self.n_fill} tokens")

    @property
    def n_fill(self) -> int:
        """Filler tokens per sequence (what the bindings leave of ``length``)."""
        per_binding = 2 * (1 + self.n_repeats) + (self.n_repeats if self.marked else 0)
        return self.length - self.n_bindings * per_binding

    @property
    def filler_base(self) -> int:
        """First token id of the fillers (0 is padding)."""
        return 1

    @property
    def key_base(self) -> int:
        """First token id of the keys (library keys, then novel keys)."""
        return 1 + self.n_fillers

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
        """Scored tokens per token: n_bindings · n_repeats / length."""
        return self.n_bindings * self.n_repeats / self.length

    @property
    def floor(self) -> float:
        """Expected share of tokens that need attention: novel queries per token."""
        return self.query_share * (1 - self.library_share)


class RecallTask:
    """Seeded recall generator meeting the ``TokenTask`` protocol.

    >>> task = RecallTask(RecallConfig(length=64, n_bindings=4))
    >>> task.sample(2, np.random.default_rng(0)).tokens.shape
    (2, 64)
    """

    def __init__(self, config: RecallConfig | None = None):
        self.config = config or RecallConfig()
        c = self.config
        self.name = "recall-marked" if c.marked else "recall-unmarked"
        self.vocab_size = c.vocab_size
        self.n_library = c.n_library
        self.library_values = np.random.default_rng(c.library_seed).integers(
            0, c.n_values, c.n_library)  # (n_library,)

    def sample(self, batch_size: int, rng: np.random.Generator | int | None = None, *,
               library_labels: bool | None = None, library: np.ndarray | None = None,
               hide: np.ndarray | None = None) -> TokenBatch:
        """Draw ``batch_size`` independent sequences (a pure function of ``rng``).

        ``library_labels`` (default: the config's) keeps the labels at library queries.
        ``library``: the library bindings a library slot may take (default: all; the study
        protocol, ``tasks/study.py``, narrows it). ``hide``: library bindings whose store becomes
        two filler tokens, with only their first query scored, so nothing in the sequence shows
        the value before that query (the protocol's test, and its cue-answer study).
        """
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        c = self.config
        b, n, occurrences = batch_size, c.n_bindings, 1 + c.n_repeats
        item, occ = place_units(rng, b, n, occurrences, c.n_fill)  # (B, U) each
        is_lib = rng.random((b, n)) < c.library_share  # (B, n)
        pool = np.arange(c.n_library) if library is None else np.asarray(library, np.int64)
        lib_pattern = pool[distinct_picks(rng, b, len(pool), n)]  # (B, n)
        novel_key = distinct_picks(rng, b, c.n_novel_keys, n)  # (B, n)
        key = np.where(is_lib, c.key_base + lib_pattern, c.key_base + c.n_library + novel_key)
        value = np.where(is_lib, self.library_values[lib_pattern],
                         rng.integers(0, c.n_values, (b, n))) + c.value_base  # (B, n) token ids
        pattern = np.where(is_lib, lib_pattern, -1)  # (B, n)
        fillers = rng.integers(c.filler_base, c.filler_base + c.n_fillers, item.shape)

        is_query = occ > 0  # (B, U)
        width = np.where(item < 0, 1, 2 + (is_query & c.marked))  # (B, U)
        start = unit_starts(width)  # (B, U)
        tokens = np.empty((b, c.length), np.int64)
        labels = np.full((b, c.length), IGNORE_INDEX, np.int64)
        pattern_at = np.full((b, c.length), -1, np.int64)
        r, u = np.nonzero(item < 0)
        tokens[r, start[r, u]] = fillers[r, u]
        r, u = np.nonzero(item >= 0)
        i = item[r, u]
        key_pos = start[r, u] + (is_query[r, u] & c.marked)
        tokens[r, key_pos] = key[r, i]
        tokens[r, key_pos + 1] = value[r, i]
        pattern_at[r, key_pos] = pattern_at[r, key_pos + 1] = pattern[r, i]
        q = is_query[r, u]
        if hide is not None:
            hidden = is_lib[r, i] & np.isin(pattern[r, i], hide)
            store = ~q & hidden
            tokens[r[store], key_pos[store]] = rng.integers(c.filler_base, c.filler_base
                                                            + c.n_fillers, int(store.sum()))
            tokens[r[store], key_pos[store] + 1] = rng.integers(
                c.filler_base, c.filler_base + c.n_fillers, int(store.sum()))
            pattern_at[r[store], key_pos[store]] = pattern_at[r[store], key_pos[store] + 1] = -1
            q = q & ~(hidden & (occ[r, u] > 1))  # a later repeat follows the first query
        unlabelled = not (c.library_labels if library_labels is None else library_labels)
        scored = q & ~is_lib[r, i] if unlabelled else q  # the shortcut closed: library queries
        labels[r[scored], key_pos[scored]] = value[r[scored], i[scored]]  # stay unlabelled
        extras = {}
        if unlabelled:  # ... but stay queries for the routing losses (consolidation, q̂, cost)
            extras[QUERY_MASK] = np.zeros((b, c.length), bool)
            extras[QUERY_MASK][r[q], key_pos[q]] = True
        if c.marked:
            tokens[r[q], key_pos[q] - 1] = QUERY_TOKEN
            pattern_at[r[q], key_pos[q] - 1] = pattern[r[q], i[q]]
        return TokenBatch(tokens, labels, pattern_at, extras=extras)

    def eval_set(self, n: int, seed: int = 10_000) -> TokenBatch:
        """The fixed evaluation set (its seed space is tagged apart from training streams)."""
        return self.sample(n, np.random.default_rng([seed, EVAL_TAG]), library_labels=True)

    @property
    def library_slots_per_sequence(self) -> int:
        """The most library bindings one sequence holds (its bindings)."""
        return self.config.n_bindings

    def probe_set(self, patterns: np.ndarray, n: int, seed: int = 10_000) -> TokenBatch:
        """Test sequences of the study protocol: library slots from ``patterns``, stores removed."""
        return self.sample(n, np.random.default_rng([seed, EVAL_TAG, 0x9B0E]), library_labels=True,
                           library=patterns, hide=patterns)
