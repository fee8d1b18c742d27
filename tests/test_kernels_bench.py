"""Kernel benchmark: row contract, work counts, table writing (quick sizes only)."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
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
        assert r["ms"] > 0 and r["dense_ms"] > 0
        assert math.isclose(r["ratio"], r["ms"] / r["dense_ms"])
    routed = [r for r in rows if r["op"] == "routed_attention"]
    assert {r["p"] for r in routed} == {1.0, 0.5, 0.1, 0.02}
    assert all(r["tile_ratio"] == 1.0 for r in routed if r["p"] == 1.0)
    for t in {r["T"] for r in routed}:
        by_p = {r["p"]: r["tile_ratio"] for r in routed if r["T"] == t}
        assert by_p[0.02] <= by_p[0.1] <= by_p[0.5] <= 1.0 and by_p[0.02] < 1.0
    assert {r["D"] for r in rows if r["op"] == "ct_scan"} == {64, 128}
    from cram.core.results import load_results

    out = tmp_path / "results"
    paths = write_kernel_bench_tables(rows, argv=["cram", "bench", "kernels"], results=out)
    studies = load_results(out)
    assert [p.parent.name for p in paths] == [
        "routed-attention-vs-dense-causal-sdpa-cpu-1-thread-s",
        "ct-scan-vs-the-torch-loop-cpu-1-thread-s"]
    (routed,) = studies[paths[0].parent.name]
    assert routed.title == "Routed attention vs dense causal SDPA (cpu, 1 thread(s))"
    assert routed.command == "cram bench kernels" and routed.seeds == [0]
    assert len(routed.rows) == len([r for r in rows if r["op"] == "routed_attention"])
    assert "tile_ratio" in routed.columns and "Forward only" in routed.notes
    model_rows = [{"op": "model_infer", "T": 2048, "p": 0.02, "ms": 3.0, "dense_ms": 12.0,
                   "ratio": 0.25, "run": "cram-seed0"}]
    (path,) = write_kernel_bench_tables(model_rows, argv=["cram", "bench", "kernels"], results=out)
    (model,) = load_results(out)[path.parent.name]
    assert model.title == "CRAM vs dense Transformer, whole model"
    assert model.columns[-1] == "run" and model.rows == model_rows


def test_realistic_shapes_refuse_without_cuda():
    import subprocess
    import sys

    from cram.kernels.bench import NeedsCudaError, run_kernel_bench

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal is for machines without one")
    with pytest.raises(NeedsCudaError, match="needs a CUDA device"):
        run_kernel_bench(shapes="realistic", progress=False)
    res = subprocess.run([sys.executable, "-m", "cram.cli", "bench", "kernels", "--shapes",
                          "realistic", "--no-docs"], capture_output=True, text=True, timeout=120,
                         check=False)
    assert res.returncode == 2
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "needs a CUDA device" in lines[0]


def test_realistic_row_contract(monkeypatch):
    """One realistic row at a tiny size on whatever device exists (the timing code path)."""
    from cram.kernels import bench

    monkeypatch.setitem(bench.REALISTIC, "B", 2)
    monkeypatch.setitem(bench.REALISTIC, "H", 2)
    monkeypatch.setitem(bench.REALISTIC, "reps", 1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    qkv = bench._realistic_inputs(128, 16, device, seed=0)
    batch_idx, pos = bench._realistic_selection(128, 0.1, device, seed=0)
    for pass_ in ("forward", "forward+backward"):
        row = bench._realistic_row(qkv, batch_idx, pos, 0.1, "torch", pass_,
                                   breakdown=pass_ == "forward+backward")
        assert row["N"] == 2 * round(0.1 * 128) and row["dtype"] == "bfloat16"
        assert ("profile" in row) == (pass_ == "forward+backward")
        assert row["pass"] == pass_ and row["shapes"] == "realistic" and row["ms"] > 0
        assert math.isclose(row["ratio"], row["ms"] / row["dense_ms"]) and row["tile_ratio"] < 1
    names = [e["name"] for e in row["profile"]]  # the torch path's backward runs matmuls
    assert any("mm" in n or "bmm" in n or "matmul" in n for n in names), names
    assert all(e["ms"] > 0 and e["calls"] > 0 for e in row["profile"])
    title, table, notes = bench._realistic_table([row])
    assert "flash" in title and "| 128 | 16 | 0.1 | forward+backward | torch |" in table
    assert "B=2, H=2" in notes


def test_realistic_rows_stay_out_of_the_small_table(tmp_path):
    rows = [{"op": "routed_attention", "shapes": "realistic", "T": 4096, "Dh": 64, "p": 0.02,
             "pass": "forward", "backend": "triton", "N": 655, "ms": 1.0, "dense_ms": 4.0,
             "ratio": 0.25, "tile_ratio": 0.05, "dtype": "bfloat16", "device": "cuda", "B": 8,
             "H": 8}]
    (path,) = write_kernel_bench_tables(rows, argv=["cram", "bench", "kernels"],
                                        results=tmp_path / "results")
    assert path.parent.name == "routed-attention-vs-flash-attention-gpu-sized-shapes"


@pytest.mark.gpu
def test_realistic_bench_runs_on_cuda(monkeypatch):
    from cram.kernels import bench

    monkeypatch.setitem(bench.REALISTIC, "T", (1024,))
    monkeypatch.setitem(bench.REALISTIC, "Dh", (64,))
    monkeypatch.setitem(bench.REALISTIC, "p", (1.0, 0.02))
    # the hand-written kernel and its no-split ablation, fixed tiles, one round: the timing code
    # path, not the numbers (FlexAttention has its own GPU tests; compiling it here took 80 s)
    monkeypatch.setitem(bench.REALISTIC, "backends", ("triton", "triton-nosplit"))
    monkeypatch.setitem(bench.REALISTIC, "reps", 1)
    monkeypatch.setenv("CRAM_TRITON_AUTOTUNE", "0")
    rows = bench.run_realistic_bench(progress=False)
    order = bench._realistic_order(bench.REALISTIC["backends"], bench._split_wanted)
    assert len(rows) == 2 * len(order)
    assert {r["backend"] for r in rows} == {b for b, *_ in order}
    assert all(r["ms"] > 0 and r["device"] == "cuda" for r in rows)
    for r in rows:
        if r["backend"] == "triton-nosplit":
            assert r["splits"] == 1 and r["longest_steps"] > 0 and "configs" in r


def test_throughput_script_reads_tokens_and_seconds(monkeypatch):
    """scripts/bench_throughput.py trains through the public CLI and reads metrics.csv."""
    from pathlib import Path

    from script_helpers import load_script

    mod = load_script("bench_throughput")
    real_run, folders = subprocess.run, []

    def recording_run(cmd, **kw):
        folders.append(kw.get("cwd"))
        return real_run(cmd, **kw)

    monkeypatch.setattr(mod.subprocess, "run", recording_run)
    row = mod.measure("transformer", "cpu-tiny", steps=3)
    # not run from a checkout: `-m cram` takes the code the interpreter has installed
    assert folders and all(f is not None and not (Path(f) / "cram").exists() for f in folders)
    assert row["steps"] == 3 and row["tokens_seen"] == 3 * 8 * 64  # batch 8, length 64
    assert row["train_seconds"] > 0
    assert math.isclose(row["tokens_per_s"], row["tokens_seen"] / row["train_seconds"])
    # a variant's ENV: entries become the run's environment, the rest --set overrides
    label, python, overrides = mod._variant("free=py;ENV:CRAM_SYNC_FREE=1;train.prefetch=0")
    assert (label, python) == ("free", "py")
    assert overrides == ("ENV:CRAM_SYNC_FREE=1", "train.prefetch=0")
    # a relative interpreter path still names the interpreter the caller meant
    relative = os.path.relpath(sys.executable)
    row = mod.measure("cram", "cpu-tiny", steps=2, python=relative, overrides=overrides)
    assert row["env"] == {"CRAM_SYNC_FREE": "1"} and row["steps"] == 2
    with pytest.raises(SystemExit, match="ENV:NAME=VALUE"):
        mod._variant("x=py;ENV:CRAM_SYNC_FREE")


def test_realistic_order_measures_the_goal_rows_first():
    """A realistic run cut short by a time limit has the rows the goal is judged on."""
    from cram.kernels import bench

    order = bench._realistic_order(("triton", "flex"))
    assert len(order) == 2 * 3 * 2 * 5 and len(set(order)) == len(order)
    # the goal's shapes (p = 0.02, T >= 8192) first, every backend on each, then p = 1
    first = order[:8]
    assert {(b, t, d) for b, t, d, _ in first} == {(b, t, d) for b in ("triton", "flex")
                                                   for t in (8192, 16384) for d in (64, 128)}
    assert all(p == 0.02 for *_, p in first) and [b for b, *_ in first[:2]] == ["triton", "flex"]
    assert all(p == 1.0 for *_, p in order[8:16])
    assert all(t == 4096 for _, t, _, _ in order[-2 * 2 * 5:])
    # the no-split ablation only where the kernel would split
    order = bench._realistic_order(("triton", "triton-nosplit"), lambda t, p, d: p <= 0.02)
    nosplit = [(t, d, p) for b, t, d, p in order if b == "triton-nosplit"]
    assert nosplit and all(p <= 0.02 for *_, p in nosplit)
    assert order[:2] == [("triton", 8192, 64, 0.02), ("triton-nosplit", 8192, 64, 0.02)]


def test_triton_rows_name_their_split_and_configs():
    """A Triton row says how many key chunks and which tuned configs it ran with."""
    from cram.kernels import bench

    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    q, k, v = (torch.randn(1, 2, 1024, 16, device=device) for _ in range(3))
    b = torch.zeros(8, dtype=torch.long, device=device)
    pos = torch.arange(8, device=device) * 128 + 100
    for backend in ("triton-nosplit", "triton"):
        out = bench._routed_call(backend, q, k, v, b, pos)
        assert out.shape == (8, 2, 16)
        detail = bench._triton_detail(backend, q, k, b, pos)
        split = backend == "triton"
        assert detail["splits"] == (2 if split else 1)  # 1024 // MIN_CHUNK
        # rows at 100, 228, ..., 996: one block walking 16 key tiles, or 8 in each of 2 chunks
        assert detail["longest_steps"] == (8 if split else 16)
        assert detail["busy_programs"] == 2 * (2 if split else 1)  # x 2 heads
        assert set(detail["configs"]) == {"forward", "dq", "dkv"}
    assert bench._triton_detail("flex", q, k, b, pos) == {}


def test_longest_program_steps_follow_the_split():
    """The critical path of the forward: tiles of the longest (block, chunk) program."""
    from cram.kernels.bench import longest_program_steps

    # two sequences in one block of 64 rows: the program walks both prefixes
    b = torch.tensor([0, 0, 1])
    pos = torch.tensor([10, 300, 200])
    assert longest_program_steps(b, pos, chunk=1024) == (300 // 64 + 1 + 200 // 64 + 1, 1)
    # chunks of 128 keys: chunk 0 is walked in both sequences (2 + 2 tiles); chunk 2 in one
    assert longest_program_steps(b, pos, chunk=128) == (4, 3)
    # 65 rows make two blocks; the second (one row at 1000) walks 16 tiles alone
    b = torch.zeros(65, dtype=torch.long)
    pos = torch.cat([torch.arange(64), torch.tensor([1000])])
    assert longest_program_steps(b, pos, chunk=4096) == (16, 2)
    assert longest_program_steps(b, pos, chunk=512) == (8, 3)


def test_failing_backend_is_an_error_row_not_a_crash(monkeypatch):
    from cram.kernels import bench

    def boom(*args):
        raise RuntimeError("out of resource: shared memory\nmore detail")

    monkeypatch.setattr(bench, "_realistic_row", boom)
    qkv = tuple(torch.zeros(2, 4, 64, 16) for _ in range(3))
    pos = torch.tensor([3, 9])
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    row = bench._guarded_row(qkv, torch.tensor([0, 1]), pos, 0.02, "triton", "forward")
    assert row["ms"] is None and row["ratio"] is None and row["N"] == 2
    assert row["error"] == "RuntimeError: out of resource: shared memory"
    assert (row["T"], row["Dh"], row["backend"]) == (64, 16, "triton")


def test_kernels_cli_streams_rows_and_picks_parts(tmp_path):
    """--parts scan --stream PATH: each row appended as a JSON line as soon as it is measured."""
    import json
    import subprocess
    import sys

    stream = tmp_path / "rows.jsonl"
    res = subprocess.run([sys.executable, "-m", "cram", "bench", "kernels", "--quick", "--parts",
                          "scan", "--stream", str(stream), "--json", "--no-docs"],
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    lines = [json.loads(x) for x in stream.read_text().splitlines()]
    assert [r["op"] for r in lines] == ["ct_scan", "ct_scan"]
    assert lines == json.loads(res.stdout)
    bad = subprocess.run([sys.executable, "-m", "cram", "bench", "kernels", "--parts", "scan,foo",
                          "--no-docs"], capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--parts" in bad.stderr


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_model_timing_rows_time_trained_runs_on_the_device(tmp_path, device):
    """model_infer / model_step rows from two trained runs, timed on the device they name."""
    from cram.consolidation.config import resolve
    from cram.consolidation.train import train
    from cram.experiments.bench import model_timing_rows

    for model in ("cram", "transformer"):
        train(model, resolve(model, "cpu-tiny"), tmp_path / f"{model}-seed0", progress=False)
    rows = model_timing_rows(str(tmp_path), quick=True, length=64, device=device)
    assert [r["op"] for r in rows] == ["model_infer", "model_step"]
    assert all(r["device"] == device and r["ms"] > 0 and r["dense_ms"] > 0 for r in rows)
    assert 0 <= rows[0]["p"] <= 1 and 0 <= rows[0]["acc"] <= 1
