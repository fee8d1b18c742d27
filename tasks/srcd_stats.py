"""What an SRCD config's parameters imply, to set beside measured statistics (``cram srcd``)."""

from __future__ import annotations

#: Quantiles reported for the gap between a store and its query.
GAP_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)


def expected_statistics(config) -> dict:
    """Statistics an :class:`~cram.tasks.srcd_stream.SRCDConfig` should produce.

    Returns
    -------
    dict
        ``query_fraction`` and ``store_fraction`` (queries per position), ``library_share``,
        ``gap_quantiles`` (Pareto(α = gap_shape, x_m = gap_scale) quantiles
        ``x_m (1 − p)^(−1/α)``, clipped at ``gap_max``, keyed by ``str(p)``) and
        ``attention_floor`` (the share of positions that are novel queries).
    """
    n_q = config.n_queries
    alpha, xm, cap = config.gap_shape, config.gap_scale, config.gap_max
    gaps = {str(q): min(xm * (1.0 - q) ** (-1.0 / alpha), cap) for q in GAP_QUANTILES}
    return {
        "query_fraction": n_q / config.length,
        "store_fraction": n_q / config.length,
        "library_share": config.library_share,
        "gap_quantiles": gaps,
        "attention_floor": n_q / config.length * (1.0 - config.library_share),
    }
