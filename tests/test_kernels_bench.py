"""Kernel benchmark: row contract, work counts, table writing (quick sizes only)."""

from __future__ import annotations

import math

import torch
from cram.kernels.bench import routed_tile_counts, run_kernel_bench, write_kernel_bench_tables


def test_tile_counts_match_dense_at_p1_and_shrink_with_p():
    seq_len, n_batch = 1024, 2
    b, p = torch.ones(n_batch, seq_len, dtype=torch.bool).nonzero(as_tuple=True)
    tiles, dense = routed_tile_counts(b, p, seq_len, n_batch)
    assert tiles == dense == n_batch * sum(range(1, 17))
    gen = torch.Generator().manual_seed(0)
    sel = torch.rand(n_batch, seq_len, generator=gen) < 0.02
    b, p = sel.nonzero(as_tuple=True)
    tiles, dense = routed_tile_counts(b, p, seq_len, n_batch)
    # one 64-row block per sequence at this p: it walks the prefix up to its last row
    assert tiles <= n_batch * (seq_len // 64 + 1) and tiles / dense < 0.25


def test_quick_bench_rows_and_tables(tmp_path):
    rows = run_kernel_bench(threads=1, quick=True, progress=False)
    ops = {r["op"] for r in rows}
    assert ops == {"routed_attention", "ct_scan"}
    for r in rows:
        for key in ("op", "T", "p", "ms", "dense_ms", "ratio", "threads", "device"):
            assert key in r
        assert r["ms"] > 0 and r["dense_ms"] > 0 and math.isclose(r["ratio"], r["ms"] / r["dense_ms"])
    routed = [r for r in rows if r["op"] == "routed_attention"]
    assert {r["p"] for r in routed} == {1.0, 0.5, 0.1, 0.02}
    assert all(r["tile_ratio"] == 1.0 for r in routed if r["p"] == 1.0)
    for t in {r["T"] for r in routed}:
        by_p = {r["p"]: r["tile_ratio"] for r in routed if r["T"] == t}
        assert by_p[0.02] <= by_p[0.1] <= by_p[0.5] <= 1.0 and by_p[0.02] < 1.0
    assert {r["D"] for r in rows if r["op"] == "ct_scan"} == {64, 128}
    out = tmp_path / "bench.md"
    write_kernel_bench_tables(rows, argv=["cram", "bench", "kernels"], path=out)
    text = out.read_text()
    assert "Routed attention vs dense causal SDPA" in text and "CT scan vs the torch loop" in text
    assert "1 thread(s)" in text and "`cram bench kernels`" in text
    assert "whole model" not in text
    model_rows = [{"op": "model_infer", "T": 2048, "p": 0.02, "ms": 3.0, "dense_ms": 12.0,
                   "ratio": 0.25, "run": "cram-seed0"}]
    write_kernel_bench_tables(model_rows, argv=["cram", "bench", "kernels"], path=out)
    text = out.read_text()
    assert "CRAM vs dense Transformer, whole model" in text and "| cram-seed0 |" in text
