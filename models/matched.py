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
step counts whatever the schedule.

Trained like CRAM, too (since 2026-12-02): warm-up forces every gate open, as CRAM's forces
episodic routing; afterwards each gate is a sampled near-binary decision, a binary Gumbel-softmax
of the logits [0, gate] at the schedule's annealed temperature (CRAM's router samples the same
way over its three tiers), and a token whose gate is open (hard: σ(gate) > 0.5) reads attention at
full weight. The earlier matched gate mixed attention in as σ(gate) · Attn in training and
thresholded σ(gate) at 0.5 in evaluation; charged with CRAM's λ it learned gates that separated
novel from library queries (median σ 0.07-0.11 against 0.001-0.004; scripts/gate_profile.py)
yet all sat below 0.5, so its hard evaluation read no attention anywhere: the reported "collapse"
was that mismatch.

The Mixture-of-Depths counterpart needs no class: the ``mod-matched`` variant sets
``mod_capacity`` to the novel-query floor.
"""

from __future__ import annotations

from .routing import Route
from .seqboat import SeqBoat


class SeqBoatMatched(SeqBoat):
    """SeqBoat whose gates are charged by the training config's cost (see the module doc)."""

    family = "seqboat"
    sparsity_weight = 0.0  # the cost comes from the training config instead (see module doc)
    follows_routing_schedule = True  # the same warm-up criterion and ramp as CRAM
    relaxed_gates = True  # sampled near-binary gates in training (see module doc)

    def with_route_noise(self, route: Route, batch: dict) -> Route:
        """``route`` with every layer's gate noise drawn now (as CRAM draws its Gumbel noise)."""
        return route.with_uniforms(len(self.blocks), tuple(batch["dtau"].shape),
                                   batch["dtau"].device)

    def forward(self, batch: dict, route: Route = Route(), diagnose_dense: bool = False):
        """SeqBoat's forward; each layer's gate (B, T) is also reported as ``cost_share``."""
        out = super().forward(batch, route, diagnose_dense)
        for stats in out.layers:
            stats.extra["cost_share"] = stats.extra["gate"]  # (B, T) σ(gate), with gradients
        return out
