"""Hypothesis strategies the package's property tests draw on.

SRCD: ``srcd_configs()`` draws small, valid ``SRCDConfig``s (every parameter free within the
checks of ``SRCDConfig.__post_init__``), so that the generator's properties are tested away from the
defaults too.

Run folders: ``truncations(files)`` draws a file and a byte offset to cut it at, for the readers'
tests on files cut short by a kill or a full disk.
"""

from __future__ import annotations

from hypothesis import strategies as st

from cram.tasks.srcd_stream import SRCDConfig


@st.composite
def srcd_configs(draw, max_length: int = 160, encodings: tuple[str, ...] = ("id", "vector"),
                 max_queries: int = 24) -> SRCDConfig:
    """A small valid SRCDConfig; ``query_rate`` is drawn so that n_queries is exact."""
    length = draw(st.integers(2, max_length))
    n_q = draw(st.integers(1, max(1, min(length // 2, max_queries))))
    gap_scale = draw(st.floats(0.005, 0.5))
    signal_min = draw(st.integers(1, 4))
    decay_min = draw(st.floats(0.01, 1.0))
    freq_min = draw(st.floats(0.1, 3.0))
    return SRCDConfig(
        length=length,
        query_rate=n_q / length,
        library_share=draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0)),
        n_library=draw(st.integers(1, 30)),
        library_seed=draw(st.integers(0, 2**31 - 1)),
        n_novel_keys=n_q + draw(st.integers(0, 60)),
        n_values=draw(st.integers(2, 40)),
        key_encoding=draw(st.sampled_from(encodings)),
        key_dim=draw(st.integers(1, 8)),
        key_noise=draw(st.floats(0.0, 1.0)),
        gap_shape=draw(st.floats(0.5, 6.0)),
        gap_scale=gap_scale,
        gap_max=gap_scale * draw(st.floats(1.0, 100.0)),
        signal_dim_min=signal_min,
        signal_dim_max=draw(st.integers(signal_min, 4)),
        decay_min=decay_min,
        decay_max=decay_min + draw(st.floats(0.0, 1.0)),
        freq_min=freq_min,
        freq_max=freq_min + draw(st.floats(0.0, 3.0)),
        obs_noise=draw(st.floats(0.0, 0.5)),
    )


seeds = st.integers(0, 2**32 - 1)


@st.composite
def score_rows(draw, max_batch: int = 4, max_length: int = 64):
    """(scores, capacity): a (B, T) float score matrix with distinct entries, and a capacity."""
    import numpy as np

    b = draw(st.integers(1, max_batch))
    t = draw(st.integers(1, max_length))
    seed = draw(st.integers(0, 2**32 - 1))
    scores = np.random.default_rng(seed).permutation(b * t).reshape(b, t).astype(np.float32)
    return scores, draw(st.floats(1e-3, 1.0))


@st.composite
def truncations(draw, files: dict[str, bytes]) -> tuple[str, int]:
    """(name, offset): one of ``files`` and a byte offset to cut it at (0 .. its length).

    Besides offsets anywhere, offsets within two bytes of a line end and the very start and end
    are drawn often: there a reader is most likely to take a partial row for a complete one.
    """
    name = draw(st.sampled_from(sorted(files)))
    data = files[name]
    ends = [i + 1 for i, b in enumerate(data) if b == 0x0A] or [len(data)]
    near = st.sampled_from(ends).flatmap(
        lambda e: st.integers(max(0, e - 2), min(len(data), e + 2)))
    return name, draw(st.integers(0, len(data)) | near | st.sampled_from([0, len(data)]))
