"""Shared layout of item-based token streams: where each binding's occurrences go.

A sequence is a row of *units*: ``n_items * occurrences`` item occurrences and ``n_fill`` single
filler tokens, in random order. Each item appears ``occurrences`` times; occurrence 0 is the first
(the "store"), later ones are the repeats that a model must complete from memory.
"""

from __future__ import annotations

import numpy as np


def place_units(rng: np.random.Generator, batch: int, n_items: int, occurrences: int,
                n_fill: int) -> tuple[np.ndarray, np.ndarray]:
    """Random unit order; returns ``item`` and ``occ``, both (B, U) int64, -1 at filler units.

    ``U = n_items * occurrences + n_fill``. ``occ`` numbers the occurrences of an item in order of
    position (0 = first).
    """
    n_events = n_items * occurrences
    units = n_events + n_fill
    rows = np.arange(batch)[:, None]
    slots = np.sort(np.argsort(rng.random((batch, units)), axis=1)[:, :n_events], axis=1)  # (B, E)
    item_of_event = np.argsort(rng.random((batch, n_events)), axis=1) % n_items  # (B, E)
    order = np.argsort(item_of_event, axis=1, kind="stable")  # (B, E) grouped by item, by position
    item = np.full((batch, units), -1, np.int64)
    occ = np.full((batch, units), -1, np.int64)
    item[rows, slots] = item_of_event
    occ[rows, np.take_along_axis(slots, order, axis=1)] = np.arange(n_events)[None, :] % occurrences
    return item, occ


def unit_starts(width: np.ndarray) -> np.ndarray:
    """Token offset of each unit from the unit widths; (B, U) -> (B, U)."""
    return np.cumsum(width, axis=1) - width


def distinct_picks(rng: np.random.Generator, batch: int, pool: int, n: int) -> np.ndarray:
    """``n`` draws per row from ``range(pool)``, distinct while ``n <= pool`` (then cycling)."""
    perm = np.argsort(rng.random((batch, pool)), axis=1)  # (B, pool)
    return perm[:, np.arange(n) % pool]  # (B, n)
