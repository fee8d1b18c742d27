"""The shared vocabulary of the models and the consolidation layer, defined once.

- ``Tier``: the three memory tiers a CRAM router chooses between (index = router output column).
- ``Event``: the event code of an SRCD position, re-exported from ``cram.core.events`` (the
  data generator writes it, models read it).
- ``readout_kl`` / ``raw_mse``: the two consolidation distances between the episodic output r_E and
  the semantic output f_sem. The CRAM layer turns them into its score q; the consolidation loss
  trains f_sem toward r_E with them. Both callers pass the same tensors the same way, so the score
  and the loss measure the same thing.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING

from cram.core.events import EVENT_NONE, EVENT_QUERY, EVENT_STORE, Event  # noqa: F401

if TYPE_CHECKING:  # the formulas use tensor methods only; this module imports no torch
    import torch


class Tier(IntEnum):
    """Where a token's memory read comes from; the value is the router's output column."""

    WORKING = 0  # no retrieval beyond the CT-ODE working memory every token already has
    EPISODIC = 1  # causal attention over the episodic buffer
    SEMANTIC = 2  # the low-rank semantic MLP


TIERS: tuple[str, ...] = tuple(t.name.lower() for t in Tier)  # ("working", "episodic", "semantic")




def readout_kl(log_p_episodic: torch.Tensor, log_p_semantic: torch.Tensor) -> torch.Tensor:
    """KL(p_E ‖ p_S) of two value readouts given as log-probabilities. (..., V) → (...)."""
    return (log_p_episodic.exp() * (log_p_episodic - log_p_semantic)).sum(-1)


def raw_mse(f_semantic: torch.Tensor, r_episodic: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the raw vectors over the feature dim. (..., d) → (...)."""
    return (f_semantic - r_episodic).pow(2).mean(-1)
