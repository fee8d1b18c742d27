"""Baselines charged like CRAM, for ``cram bench mechanism`` (issue 15: cost-matched comparisons).

``SeqBoatMatched`` is the SeqBoat-style gate of :mod:`cram.models.seqboat` with its fixed sparsity
penalty (0.01 · mean gate) replaced by CRAM's attention cost: each layer reports its soft gate as
``LayerStats.extra["cost_share"]`` (B, T), and the consolidation loss charges it
``cost_scale(step) · (λ_q · mean at queries + λ_n · mean elsewhere)`` with the run's
``train.cost_query`` / ``train.cost_nonquery`` and the same warm-up and ramp as CRAM, ungated (the
gate has no familiarity to scale by). "The same warm-up" holds under either routing schedule: under
the learned one (``train.schedule=learned``, the default) the trainer measures the schedule's
retrieval criterion on this model too (its no-retrieval forward closes every gate), so the cost
starts when *its* attention has learned retrieval; before 2026-12-02 it was charged on the fixed
step counts whatever the schedule. The Mixture-of-Depths counterpart needs no class: the
``mod-matched`` variant sets ``mod_capacity`` to the novel-query floor.
"""

from __future__ import annotations

from .routing import Route
from .seqboat import SeqBoat


class SeqBoatMatched(SeqBoat):
    """SeqBoat whose gates are charged by the training config's cost (see the module doc)."""

    family = "seqboat"
    sparsity_weight = 0.0  # the cost comes from the training config instead (see module doc)
    follows_routing_schedule = True  # the same warm-up criterion and ramp as CRAM

    def forward(self, batch: dict, route: Route = Route(), diagnose_dense: bool = False):
        """SeqBoat's forward; each layer's gate (B, T) is also reported as ``cost_share``."""
        out = super().forward(batch, route, diagnose_dense)
        for stats in out.layers:
            stats.extra["cost_share"] = stats.extra["gate"]  # (B, T) σ(gate), with gradients
        return out
