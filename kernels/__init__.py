"""Compute kernels with pure-torch twins: ``routed_attention`` and ``ct_scan``."""
