"""SRCD: Sparse Retrieval in Continuous Dynamics (the paper's benchmark, per docs/method.md).

Each sequence is a stream of ``length`` irregularly sampled positions. Every position carries the
time gap Δτ_t (Pareto-distributed) and a noisy observation x(τ_t) of a random stable linear ODE; a
few positions are events:

- **store** (key, value): a binding enters the stream;
- **query** (key): the model must output the value bound to that key earlier in the stream.

Each binding is stored once and queried once, later. A share ``library_share`` (the recurrence f of
the paper's theorem) of the bindings comes from a fixed **library** of ``n_library`` keys, each
always bound to the same value (fixed by ``library_seed``); the rest are **novel**: keys from a
disjoint pool with values drawn fresh per sequence. Library bindings are stored too, so attention
can
always answer; consolidation is what makes attention unnecessary for them.

Key encodings:

- ``id``: keys are ids (library ids ``1..n_library``, novel ids above), so a key says whether it is
  familiar, but only training can teach which value a library key carries;
- ``vector``: keys are random vectors; library keys are fixed vectors plus fresh noise at every
  occurrence, novel keys are fresh vectors (plus the same noise), so familiarity must be learned.

Signal family (documented decision): per sequence, a latent linear SDE with ``k ∈ [signal_dim_min,
signal_dim_max]`` dimensions made of damped-rotation 2×2 blocks (decay a, angular frequency ω) and,
for odd k, one real decaying mode, driven by isotropic noise so that it stays alive (an
Ornstein-Uhlenbeck oscillator, discretised exactly at the irregular times). It is observed through
one
random projection plus Gaussian noise and standardised per sequence to unit variance, so that a
dynamics MSE of 1.0 is the trivial level. The model predicts the next observation x(τ_{t+1}) at each
position t (the next gap is not an input).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterator, Literal

import numpy as np

from cram.core.errors import ConfigError
from cram.core.events import EVENT_NONE, EVENT_QUERY, EVENT_STORE
from cram.core.fields import check_fields, config_field

__all__ = ["EVENT_NONE", "EVENT_QUERY", "EVENT_STORE", "IGNORE_INDEX", "SRCD", "SRCDBatch",
           "SRCDConfig", "describe", "stream_rng"]
IGNORE_INDEX = -100


@dataclass(frozen=True)
class SRCDConfig:
    """Every parameter of the SRCD construction (defaults: the paper's N=2048, 5%, 70%, 100)."""

    length: int = config_field(2048, min=1)
    query_rate: float = config_field(0.05, gt=0, lt=1)  # share of positions that are queries
    #   (one store per query as well)
    library_share: float = config_field(0.7, range=(0, 1))  # recurrence f: share of bindings
    #   drawn from the library
    n_library: int = config_field(100, min=1)  # fixed library of key→value patterns
    library_seed: int = config_field(1234, min=0)  # fixes the library (its values and key
    #   vectors), not the stream; numpy seeds are never negative
    n_novel_keys: int = config_field(1000, min=1)  # pool of novel key ids, disjoint from the
    #   library
    n_values: int = config_field(32, min=2)  # value vocabulary size (chance accuracy 1/n_values)
    key_encoding: Literal["id", "vector"] = "id"
    key_dim: int = config_field(32, min=1)  # vector encoding: key vector dimension
    key_noise: float = config_field(0.3, min=0)  # vector encoding: fresh per-occurrence noise
    #   (per-entry std)
    gap_shape: float = config_field(2.0, gt=0, finite=True)  # Pareto shape α of the time gaps
    #   (tail P(Δτ > x) ∝ x^-α)
    gap_scale: float = config_field(0.05, gt=0, finite=True)  # Pareto scale: the minimum gap
    gap_max: float = config_field(2.0, gt=0, finite=True)  # gaps are clipped here (keeps the
    #   Euler step of the CT tier stable)
    signal_dim_min: int = 2
    signal_dim_max: int = 4
    decay_min: float = config_field(0.05, gt=0, finite=True)  # latent decay rates
    #   a ~ U(decay_min, decay_max)
    decay_max: float = 0.5
    freq_min: float = config_field(0.5, gt=0, finite=True)  # angular frequencies
    #   ω ~ U(freq_min, freq_max)
    freq_max: float = 3.0
    obs_noise: float = config_field(0.1, min=0)  # observation noise, relative to the latent
    #   signal's std
    # task variants (cram bench transfer): same library, another task
    answer_permutation_seed: int | None = config_field(None, min=0)  # query format:
    #   answer = π(value) for a fixed π
    library_keys: Literal["default", "shifted"] = "default"  # shifted: library keys take ids
    #   n_library+1..2·n_library (keys the default task uses as novel), novel keys the ids above
    library_answer: Literal["fixed", "permuted", "unlabelled"] = "fixed"  # closes the readout
    #   shortcut (docs/srcd.md, "Shortcut-closed variants"): "permuted" relabels each sequence's
    #   library values by a fresh permutation (store and answer alike: only the store can tell);
    #   "unlabelled": training draws carry no answer at library queries (IGNORE_INDEX), so the
    #   value loss never teaches the readout a library value; the evaluation set keeps them

    def __post_init__(self) -> None:
        check_fields(self)  # each field alone; below, the checks that join fields
        if self.gap_max < self.gap_scale:
            raise ConfigError("SRCDConfig.gap_max must be >= gap_scale")
        if not (1 <= self.signal_dim_min <= self.signal_dim_max <= 5):
            raise ConfigError("SRCDConfig.signal_dim_min/signal_dim_max: need 1 <= min <= max <= 5 "
                              "(two rotation blocks plus one real mode)")
        if self.decay_max < self.decay_min or self.freq_max < self.freq_min:
            raise ConfigError("SRCDConfig: decay_max/freq_max must be >= decay_min/freq_min")
        n_q = self.n_queries
        if 2 * n_q > self.length:
            raise ConfigError(
                f"SRCDConfig.query_rate={self.query_rate}: {n_q} queries plus their stores do not "
                f"fit in length {self.length}"
            )
        if n_q > self.novel_pool:
            raise ConfigError(f"SRCDConfig.n_novel_keys={self.n_novel_keys}: the novel pool "
                              f"({self.novel_pool}) is smaller than {n_q} bindings")

    @property
    def n_queries(self) -> int:
        """Queries (= bindings) per sequence."""
        return max(1, int(round(self.query_rate * self.length)))

    @property
    def key_shift(self) -> int:
        """Offset of the library key ids (n_library when ``library_keys='shifted'``)."""
        return self.n_library if self.library_keys == "shifted" else 0

    @property
    def novel_pool(self) -> int:
        """Novel key ids available (the shifted library takes the first n_library of them)."""
        return self.n_novel_keys - self.key_shift

    @property
    def n_keys(self) -> int:
        """Size of the key-id vocabulary, 0 included (0 = no key)."""
        return 1 + self.n_library + self.n_novel_keys


@dataclass
class SRCDBatch:
    """A batch of SRCD sequences as numpy arrays; ``B`` sequences of ``T`` positions."""

    dtau: np.ndarray  # (B, T) float32 time gap before each position
    signal: np.ndarray  # (B, T) float32 observed signal x(τ_t)
    event: np.ndarray  # (B, T) int64 EVENT_NONE / EVENT_STORE / EVENT_QUERY
    key: np.ndarray  # (B, T) int64 key id at store/query (0 elsewhere; 0 everywhere for 'vector')
    value_in: np.ndarray  # (B, T) int64 value id + 1 at stores, 0 elsewhere (never at queries)
    key_vec: np.ndarray | None  # (B, T, key_dim) float32 for 'vector', else None
    target_signal: np.ndarray  # (B, T) float32 next observation x(τ_{t+1}); 0 at the last position
    signal_mask: np.ndarray  # (B, T) bool, False at the last position
    answer: np.ndarray  # (B, T) int64 value id at queries, IGNORE_INDEX elsewhere
    is_library: np.ndarray  # (B, T) bool, True at library queries
    pattern: np.ndarray  # (B, T) int64 library pattern index at library queries, -1 elsewhere
    lag: np.ndarray  # (B, T) int64 intervening items between store and query, -1 elsewhere

    def __len__(self) -> int:
        return self.dtau.shape[0]

    def to_torch(self, device=None, non_blocking: bool = False) -> dict:
        """The batch as a dict of torch tensors on device (the models' input).

        ``non_blocking``: on CUDA, copy from pinned host memory without waiting (issue 16: a
        pageable copy waits for the device's queue); elsewhere ignored.
        """
        from .batch import host_to_device

        out = {}
        for f in dataclasses.fields(self):
            arr = getattr(self, f.name)
            out[f.name] = None if arr is None else host_to_device(arr, device, non_blocking)
        return out

    @staticmethod
    def concat(parts: list["SRCDBatch"]) -> "SRCDBatch":
        """Stack batches along the sequence axis (e.g. the per-rank shards of a global batch)."""
        return SRCDBatch(**{f.name: (None if getattr(parts[0], f.name) is None
                                     else np.concatenate([getattr(p, f.name) for p in parts]))
                            for f in dataclasses.fields(parts[0])})

    def slice(self, start: int, stop: int) -> "SRCDBatch":
        """Sequences start:stop of the batch."""
        return SRCDBatch(**{f.name: (None if getattr(self, f.name) is None
                                     else getattr(self, f.name)[start:stop])
                            for f in dataclasses.fields(self)})


class SRCD:
    """Seeded, vectorised SRCD generator.

    >>> gen = SRCD(SRCDConfig(length=256))
    >>> batch = gen.sample(4, seed=0)
    >>> batch.event.shape
    (4, 256)
    """

    def __init__(self, config: SRCDConfig | None = None):
        self.config = config or SRCDConfig()
        lib_rng = np.random.default_rng(self.config.library_seed)
        c = self.config
        self.library_values = lib_rng.integers(0, c.n_values, c.n_library)  # (n_library,)
        self.library_vectors = lib_rng.standard_normal((c.n_library, c.key_dim)).astype(np.float32)
        self.answer_permutation = (None if c.answer_permutation_seed is None else
                                   np.random.default_rng(c.answer_permutation_seed).permutation(c.n_values))

    # ------------------------------------------------------------------ sampling
    def sample(self, batch_size: int, seed: int | np.random.Generator | None = None,
               library_labels: bool = False, *, library: np.ndarray | None = None,
               hide: np.ndarray | None = None) -> SRCDBatch:
        """Draw ``batch_size`` independent sequences.

        With ``library_answer="unlabelled"`` library queries carry IGNORE_INDEX as their answer
        (a training draw) unless ``library_labels`` (the evaluation set sets it). ``library``:
        the library patterns a library slot may take (default: all; the study protocol,
        ``tasks/study.py``, narrows it). ``hide``: library patterns whose stores are removed
        (the protocol's test, and its cue-answer study).
        """
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        c = self.config
        b, t, n = batch_size, c.length, c.n_queries
        rows = np.arange(b)[:, None]

        # --- event positions: 2n distinct positions; each binding id appears twice; the earlier is
        # the store, the later the query (stable sort keeps positions in increasing order).
        positions = np.sort(np.argsort(rng.random((b, t)), axis=1)[:, : 2 * n], axis=1)  # (B, 2n)
        labels = np.argsort(rng.random((b, 2 * n)), axis=1) % n  # (B, 2n), each id twice
        order = np.argsort(labels, axis=1, kind="stable").reshape(b, n, 2)  # (B, n, 2)
        store_pos = np.take_along_axis(positions, order[..., 0], axis=1)  # (B, n)
        query_pos = np.take_along_axis(positions, order[..., 1], axis=1)  # (B, n)

        # --- bindings: library or novel; keys distinct within a sequence
        is_lib = rng.random((b, n)) < c.library_share  # (B, n)
        pool = np.arange(c.n_library) if library is None else np.asarray(library, np.int64)
        lib_pick = pool[np.argsort(rng.random((b, len(pool))), axis=1)]  # (B, pool)
        lib_pattern = lib_pick[:, np.arange(n) % len(pool)]  # (B, n); distinct if n <= pool
        novel_pick = np.argsort(rng.random((b, c.novel_pool)), axis=1)[:, :n]  # (B, n)
        pattern = np.where(is_lib, lib_pattern, -1)
        shift = c.key_shift
        key_id = np.where(is_lib, 1 + shift + lib_pattern, 1 + c.n_library + shift + novel_pick)
        value = np.where(is_lib, self.library_values[lib_pattern],
                         rng.integers(0, c.n_values, (b, n)))

        event = np.zeros((b, t), np.int64)
        key = np.zeros((b, t), np.int64)
        value_in = np.zeros((b, t), np.int64)
        answer = np.full((b, t), IGNORE_INDEX, np.int64)
        is_library = np.zeros((b, t), bool)
        pattern_at = np.full((b, t), -1, np.int64)
        lag = np.full((b, t), -1, np.int64)
        event[rows, store_pos] = EVENT_STORE
        event[rows, query_pos] = EVENT_QUERY
        if c.key_encoding == "id":
            key[rows, store_pos] = key_id
            key[rows, query_pos] = key_id
        value_in[rows, store_pos] = value + 1
        answer[rows, query_pos] = value if self.answer_permutation is None \
            else self.answer_permutation[value]
        is_library[rows, query_pos] = is_lib
        pattern_at[rows, query_pos] = pattern
        lag[rows, query_pos] = query_pos - store_pos - 1

        key_vec = (self._key_vectors(rng, is_lib, lib_pattern, store_pos, query_pos, t)
                   if c.key_encoding == "vector" else None)  # (B, T, Dk)

        # --- continuous signal
        dtau = np.minimum(c.gap_scale * (1.0 + rng.pareto(c.gap_shape, (b, t))), c.gap_max)
        signal = self._signal(dtau, rng)  # (B, T)
        target = np.zeros_like(signal)
        target[:, :-1] = signal[:, 1:]
        mask = np.ones((b, t), bool)
        mask[:, -1] = False
        if c.library_answer == "permuted":  # drawn last: the rest of the stream is unchanged
            self._permute_library(rng, is_lib, value, store_pos, query_pos, value_in, answer)
        if c.library_answer == "unlabelled" and not library_labels:
            answer[is_library] = IGNORE_INDEX  # the loss never sees a library value at a query
        batch = SRCDBatch(dtau.astype(np.float32), signal.astype(np.float32), event, key,
                          value_in, key_vec, target.astype(np.float32), mask, answer, is_library,
                          pattern_at, lag)
        if hide is not None:
            _hide_stores(batch, np.asarray(hide, np.int64))
        return batch

    def _key_vectors(self, rng: np.random.Generator, is_lib: np.ndarray, lib_pattern: np.ndarray,
                     store_pos: np.ndarray, query_pos: np.ndarray, length: int) -> np.ndarray:
        """(B, T, Dk) key vectors: a library key's fixed vector or a fresh one, plus noise.

        is_lib, lib_pattern, store_pos, query_pos: (B, n). Fresh noise at every occurrence.
        """
        c = self.config
        b, n = is_lib.shape
        rows = np.arange(b)[:, None]
        base = np.where(is_lib[..., None], self.library_vectors[np.maximum(lib_pattern, 0)],
                        rng.standard_normal((b, n, c.key_dim)))  # (B, n, Dk)
        key_vec = np.zeros((b, length, c.key_dim), np.float32)
        for pos in (store_pos, query_pos):
            noise = c.key_noise * rng.standard_normal((b, n, c.key_dim))
            key_vec[rows, pos] = base + noise
        return key_vec

    def _permute_library(self, rng: np.random.Generator, is_lib: np.ndarray, value: np.ndarray,
                         store_pos: np.ndarray, query_pos: np.ndarray, value_in: np.ndarray,
                         answer: np.ndarray) -> None:
        """Relabel library values per sequence by a random permutation, in place.

        is_lib, value, store_pos, query_pos: (B, n); value_in, answer: (B, T).
        """
        b, n_values = value.shape[0], self.config.n_values
        perm = np.argsort(rng.random((b, n_values)), axis=1)  # (B, V): one permutation per row
        rows = np.arange(b)[:, None]
        shown = np.where(is_lib, perm[rows, value], value)  # (B, n)
        value_in[rows, store_pos] = shown + 1
        answer[rows, query_pos] = shown if self.answer_permutation is None \
            else self.answer_permutation[shown]

    def _signal(self, dtau: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Exact discretisation of a random latent OU oscillator at irregular times; (B, T)."""
        c = self.config
        b, t = dtau.shape
        k = rng.integers(c.signal_dim_min, c.signal_dim_max + 1, b)  # latent dims per sequence
        n_rot = 2  # up to two rotation blocks (4 dims); unused blocks get zero observation weight
        decay = rng.uniform(c.decay_min, c.decay_max, (b, n_rot + 1))
        freq = rng.uniform(c.freq_min, c.freq_max, (b, n_rot))
        # observation weights per latent coordinate, masked to the sequence's k dims
        weights = rng.standard_normal((b, 2 * n_rot + 1))
        odd_dims = np.array([1, 1, 1, 1, 0])[None, :] * (np.arange(5)[None, :] < k[:, None] - 1)
        dims_used = np.where(k[:, None] % 2 == 1,
                             odd_dims + (np.arange(5)[None, :] == 4),
                             np.arange(5)[None, :] < k[:, None])
        weights = weights * dims_used
        z_rot = rng.standard_normal((b, n_rot, 2))  # stationary start (unit variance)
        z_real = rng.standard_normal(b)
        eps = rng.standard_normal((t, b, 2 * n_rot + 1))
        out = np.empty((b, t))
        for i in range(t):
            d = dtau[:, i]
            rho = np.exp(-decay * d[:, None])  # (B, n_rot + 1)
            amp = np.sqrt(1.0 - rho**2)
            ang = freq * d[:, None]  # (B, n_rot)
            cos, sin = np.cos(ang), np.sin(ang)
            x0, x1 = z_rot[..., 0], z_rot[..., 1]
            z_rot = np.stack([cos * x0 - sin * x1, sin * x0 + cos * x1], -1) * rho[:, :n_rot, None]
            z_rot = z_rot + amp[:, :n_rot, None] * eps[i, :, : 2 * n_rot].reshape(b, n_rot, 2)
            z_real = rho[:, n_rot] * z_real + amp[:, n_rot] * eps[i, :, 2 * n_rot]
            out[:, i] = (z_rot.reshape(b, -1) * weights[:, :4]).sum(1) + weights[:, 4] * z_real
        out = out + c.obs_noise * np.sqrt((weights**2).sum(1, keepdims=True)) \
            * rng.standard_normal((b, t))
        out = out - out.mean(1, keepdims=True)
        return out / (out.std(1, keepdims=True) + 1e-8)

    # ------------------------------------------------------------------ streams
    def stream(self, batch_size: int, seed: int, rank: int = 0, start_step: int = 0
               ) -> Iterator[SRCDBatch]:
        """Endless training stream; batch ``i`` depends only on (seed, rank, i).

        So a resumed run (``start_step``) sees exactly the batches an uninterrupted run would have
        seen.
        """
        step = start_step
        while True:
            yield self.sample(batch_size, stream_rng(seed, rank, step))
            step += 1

    def eval_set(self, n_sequences: int, seed: int = 10_000) -> SRCDBatch:
        """The fixed evaluation set (its seed is disjoint from training streams by construction)."""
        return self.sample(n_sequences, np.random.default_rng([seed, 0xE7A1]), library_labels=True)

    def sample_at(self, step: int, batch_size: int, rng) -> SRCDBatch:
        """Training batch ``step`` (the step matters only under the study protocol)."""
        return self.sample(batch_size, rng)

    @property
    def library_slots_per_sequence(self) -> int:
        """The most library bindings one sequence holds (its bindings)."""
        return self.config.n_queries

    def probe_set(self, patterns: np.ndarray, n_sequences: int, seed: int) -> SRCDBatch:
        """Test sequences of the study protocol: library slots from ``patterns``, stores removed.

        Every library binding is queried with its store taken out of the sequence (the position
        keeps its time gap and signal but carries no event), so only the weights can answer it;
        novel bindings keep their stores, as in the evaluation set.
        """
        return self.sample(n_sequences, np.random.default_rng([seed, 0x9B0E]),
                           library_labels=True, library=patterns, hide=patterns)

    # ------------------------------------------------ the trainer's hooks (tasks/view.py)
    native = True  # SRCD's own encoding: events, keys, the observed signal and the lags
    name = "srcd"
    encoding = "srcd"
    per_token_metrics = False
    train_defaults: dict = {}
    takes_study = True  # sample(..., library=) and probe_set (tasks/study.py)

    @property
    def n_library(self) -> int:
        """Size of the fixed library."""
        return self.config.n_library

    def check(self) -> None:
        """Nothing to check: ``SRCDConfig`` validated every field when it was built."""

    @property
    def data_spec(self) -> dict:
        """SRCD's key and value vocabularies and the key encoding (the SRCD embedding)."""
        c = self.config
        return {"n_keys": c.n_keys, "n_values": c.n_values, "key_encoding": c.key_encoding,
                "key_dim": c.key_dim}

    @staticmethod
    def loss_view(batch: dict) -> dict:
        """The batch itself: it carries answer, event, target_signal and signal_mask."""
        return batch

    @staticmethod
    def extra_loss(outputs, batch: dict) -> dict:
        """None: the dynamics term is the objective's own (``signal_weight``)."""
        return {}

    @staticmethod
    def eval_view(batch: dict) -> dict:
        """Queries are query events; the lag and the signal target are SRCD's."""
        return {"query": batch["event"] == EVENT_QUERY, "answer": batch["answer"],
                "pattern": batch["pattern"], "is_library": batch["is_library"],
                "lag": batch["lag"], "signal_mask": batch["signal_mask"],
                "target_signal": batch["target_signal"]}

    def exposure_counts(self, batch: SRCDBatch) -> np.ndarray:
        """(n_library,) training queries per library pattern in ``batch``."""
        pattern = batch.pattern
        return np.bincount(pattern[pattern >= 0], minlength=self.config.n_library)

    def sequence_length(self, batch: SRCDBatch) -> int:
        """Positions per sequence (``SRCDConfig.length``)."""
        return self.config.length


def _hide_stores(batch: SRCDBatch, patterns: np.ndarray) -> None:
    """Remove, in place, the stores of the library bindings of ``patterns``.

    The store's position keeps its time gap and signal but carries no event, key or value; its
    query stays (with its answer), and its lag becomes -1 (no store).
    """
    rows, cols = np.nonzero(np.isin(batch.pattern, patterns) & (batch.pattern >= 0))  # queries
    store = cols - batch.lag[rows, cols] - 1  # their stores' positions
    batch.event[rows, store] = EVENT_NONE
    batch.key[rows, store] = 0
    batch.value_in[rows, store] = 0
    if batch.key_vec is not None:
        batch.key_vec[rows, store] = 0.0
    batch.lag[rows, cols] = -1


def stream_rng(seed: int, rank: int, step: int) -> np.random.Generator:
    """The generator of training batch ``step`` on ``rank``: the one source of stream seeds."""
    return np.random.default_rng([int(seed), int(rank), int(step), 0x5CD])


def describe(config: SRCDConfig, samples: int = 64, seed: int = 0) -> dict:
    """Measured statistics of generated data (for ``cram srcd describe``)."""
    import time

    gen = SRCD(config)
    t0 = time.perf_counter()
    batch = gen.sample(samples, seed)
    gen_seconds = time.perf_counter() - t0
    queries = batch.event == EVENT_QUERY
    n_tokens = batch.event.size
    gaps = batch.dtau.ravel()
    qs = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
    lags = batch.lag[queries]
    return {
        "length": int(batch.event.shape[1]),
        "samples": int(samples),
        "query_fraction": float(queries.sum() / n_tokens),
        "store_fraction": float((batch.event == EVENT_STORE).sum() / n_tokens),
        "library_share": float(batch.is_library[queries].mean()),
        "gap_quantiles": {str(q): float(np.quantile(gaps, q)) for q in qs},
        "lag_quantiles": {str(q): float(np.quantile(lags, q)) for q in qs},
        "signal_std": float(batch.signal.std()),
        "attention_floor": float(queries.sum() / n_tokens * (1 - batch.is_library[queries].mean())),
        "generation_ms_per_sequence": 1000.0 * gen_seconds / samples,
        "config": dataclasses.asdict(config),
    }
