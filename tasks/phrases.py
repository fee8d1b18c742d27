"""A language-like token task: sentences with recurring multi-token phrases.

Each sequence is a stream of sentences: filler words drawn from a Zipf law over ``n_words`` words,
with the sentence end ``.`` at rate ``sentence_end``. Into it go ``n_phrases`` phrases of
``phrase_len`` tokens, each appearing ``1 + n_repeats`` times at random places. A phrase is a head
token followed by ``phrase_len - 1`` words (uniform over the word vocabulary, so the unigram law
does not predict them).

- **Library phrases** (share ``library_share``): a fixed set of ``n_library`` phrases, the same in
  every sequence (fixed by ``library_seed``); training can learn them.
- **Novel phrases**: sampled once per sequence (a head from a disjoint pool and fresh words) and
  repeated later within it, so completing a repeat needs in-context retrieval (an induction copy).

Labels are next-token targets on the continuation of every *repeat* of a phrase: at the positions
of its first ``phrase_len - 1`` tokens, the following token; -100 elsewhere. The first appearance
of a phrase is not scored (nothing could predict a novel phrase there), so, as in SRCD, attention
can always answer a library repeat too. ``pattern`` is the library phrase id on every token of a
library phrase's appearances, -1 elsewhere. Heads occur only as phrase heads.

Vocabulary (``vocab_size = 1 + n_words + n_library + n_novel_heads``)::

    0                  "."  sentence end
    1 .. n_words       words (fillers and phrase continuations)
    then n_library     library phrase heads
    then n_novel_heads novel phrase heads
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cram.core.errors import ConfigError

from ._layout import distinct_picks, place_units, unit_starts
from .batch import IGNORE_INDEX, TokenBatch

SENTENCE_END = 0
EVAL_TAG = 0xE7A3


@dataclass(frozen=True)
class PhrasesConfig:
    """Every parameter of the phrases task (default T=256, 6 phrases of 4 tokens, half library)."""

    length: int = 256  # tokens per sequence T
    n_phrases: int = 6  # distinct phrases per sequence
    phrase_len: int = 4  # head + phrase_len - 1 continuation words
    n_repeats: int = 1  # later appearances of each phrase (the scored ones)
    library_share: float = 0.5  # share of phrases drawn from the library
    n_library: int = 32  # fixed library phrases
    library_seed: int = 1234  # fixes the library phrases, not the stream
    n_novel_heads: int = 224  # pool of novel phrase heads, disjoint from the library heads
    n_words: int = 128  # word vocabulary
    zipf_exponent: float = 1.1  # filler words: P(rank r) ∝ r^-s
    sentence_end: float = 0.1  # share of filler tokens that are "."

    def __post_init__(self) -> None:
        for name, minimum in (("length", 1), ("n_phrases", 1), ("phrase_len", 2),
                              ("n_repeats", 1), ("n_library", 1), ("n_novel_heads", 1),
                              ("n_words", 2)):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) \
                    or value < minimum:
                raise ConfigError(f"PhrasesConfig.{name}={value!r}: must be an integer "
                                  f">= {minimum}")
        for name in ("library_share", "sentence_end"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value <= 1):
                raise ConfigError(f"PhrasesConfig.{name}={value!r}: must lie in [0, 1]")
        if not (isinstance(self.zipf_exponent, (int, float)) and self.zipf_exponent >= 0):
            raise ConfigError(f"PhrasesConfig.zipf_exponent={self.zipf_exponent!r}: must be >= 0")
        if self.n_phrases > self.n_novel_heads:
            raise ConfigError(f"PhrasesConfig.n_novel_heads={self.n_novel_heads}: fewer than "
                              f"n_phrases={self.n_phrases}, so novel heads would repeat")
        if self.n_fill < 0:
            raise ConfigError(f"PhrasesConfig.length={self.length}: the phrases need "
                              f"{self.length - self.n_fill} tokens")

    @property
    def n_fill(self) -> int:
        """Filler tokens per sequence."""
        return self.length - self.n_phrases * (1 + self.n_repeats) * self.phrase_len

    @property
    def head_base(self) -> int:
        """First token id of the phrase heads (after padding and the words)."""
        return 1 + self.n_words

    @property
    def vocab_size(self) -> int:
        """Number of token ids the task uses."""
        return self.head_base + self.n_library + self.n_novel_heads

    @property
    def query_share(self) -> float:
        """Scored tokens per token."""
        return self.n_phrases * self.n_repeats * (self.phrase_len - 1) / self.length

    @property
    def floor(self) -> float:
        """Expected share of tokens that need attention: scored tokens of novel phrases."""
        return self.query_share * (1 - self.library_share)


class PhrasesTask:
    """Seeded phrase-corpus generator meeting the ``TokenTask`` protocol."""

    name = "phrases"

    def __init__(self, config: PhrasesConfig | None = None):
        self.config = config or PhrasesConfig()
        c = self.config
        self.vocab_size = c.vocab_size
        self.n_library = c.n_library
        lib_rng = np.random.default_rng(c.library_seed)
        self.library_words = lib_rng.integers(1, 1 + c.n_words, (c.n_library, c.phrase_len - 1))
        ranks = np.arange(1, c.n_words + 1, dtype=float)
        self.word_probs = ranks**-c.zipf_exponent / (ranks**-c.zipf_exponent).sum()  # (n_words,)

    def sample(self, batch_size: int, rng: np.random.Generator | int | None = None) -> TokenBatch:
        """Draw ``batch_size`` independent sequences (a pure function of ``rng``)."""
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        c = self.config
        b, n, span = batch_size, c.n_phrases, c.phrase_len
        item, occ = place_units(rng, b, n, 1 + c.n_repeats, c.n_fill)  # (B, U)
        is_lib = rng.random((b, n)) < c.library_share  # (B, n)
        lib_id = distinct_picks(rng, b, c.n_library, n)  # (B, n)
        novel_head = distinct_picks(rng, b, c.n_novel_heads, n)  # (B, n)
        novel_words = rng.integers(1, 1 + c.n_words, (b, n, span - 1))
        head = np.where(is_lib, c.head_base + lib_id, c.head_base + c.n_library + novel_head)
        words = np.where(is_lib[..., None], self.library_words[lib_id], novel_words)
        phrase = np.concatenate([head[..., None], words], axis=-1)  # (B, n, L)
        pattern = np.where(is_lib, lib_id, -1)  # (B, n)
        fill = 1 + rng.choice(c.n_words, size=item.shape, p=self.word_probs)  # (B, U)
        fill = np.where(rng.random(item.shape) < c.sentence_end, SENTENCE_END, fill)

        start = unit_starts(np.where(item < 0, 1, span))  # (B, U)
        tokens = np.empty((b, c.length), np.int64)
        labels = np.full((b, c.length), IGNORE_INDEX, np.int64)
        pattern_at = np.full((b, c.length), -1, np.int64)
        r, u = np.nonzero(item < 0)
        tokens[r, start[r, u]] = fill[r, u]
        r, u = np.nonzero(item >= 0)
        i, repeat = item[r, u], occ[r, u] > 0
        for k in range(span):
            tokens[r, start[r, u] + k] = phrase[r, i, k]
            pattern_at[r, start[r, u] + k] = pattern[r, i]
            if k + 1 < span:
                labels[r[repeat], start[r, u][repeat] + k] = phrase[r[repeat], i[repeat], k + 1]
        return TokenBatch(tokens, labels, pattern_at)

    def eval_set(self, n: int, seed: int = 10_000) -> TokenBatch:
        """The fixed evaluation set (its seed space is tagged apart from training streams)."""
        return self.sample(n, np.random.default_rng([seed, EVAL_TAG]))
