"""Layer-aware familiarity (issue 13 item 2).

q̂ should mean "this layer's semantic memory holds the binding", not "a lower layer already
fetched it".

In a stack of CRAM layers, a token that a lower layer sent to episodic memory arrives at layer l
with the retrieved value already in its residual stream. Layer l's semantic tier can then echo it,
q_l (agreement of layer l's episodic and semantic readouts) is high, and q̂_l learns "redundant with
a lower layer" instead of "consolidated". With ``train.familiarity_scope="retrieving"`` a layer's
consolidation and familiarity targets count a token only where no lower layer read episodic memory
for it (in the training forward: the forced or sampled hard choice). There the familiarity target
is 0: the binding did not come from this layer's semantic memory, and the consolidation loss does
not train the semantic tier to echo it. ``"all"`` (default) is the earlier behaviour.
"""

from __future__ import annotations

import torch

from cram.models.tiers import Tier


def attended_below(layers) -> list[torch.Tensor | None]:
    """Per layer, (B, T) bool: some lower layer chose episodic memory for the token (None for 0).

    ``layers``: LayerStats in order, each with ``choice`` (B, T), the hard tier index.
    """
    out: list[torch.Tensor | None] = []
    below = None
    for s in layers:
        out.append(below)
        here = s.choice == Tier.EPISODIC
        below = here if below is None else below | here
    return out


def scoped(where: torch.Tensor, q: torch.Tensor, below: torch.Tensor | None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask for the consolidation loss, familiarity target) of one layer.

    where (B, T) bool: query tokens where r_E was computed; q (B, T): the layer's score;
    below (B, T) bool or None: a lower layer attended. Outside the scope the target is 0.
    """
    if below is None:
        return where, q.detach()
    return where & ~below, q.detach() * (~below).to(q.dtype)
