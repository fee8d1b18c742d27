"""Kernel benchmark: routed attention against dense causal SDPA, CT scan against the torch loop.

``run_kernel_bench`` returns rows ``{op, T, p, ms, dense_ms, ratio, ...}``;
``ratio = ms / dense_ms`` (below 1 means faster than the baseline). ``write_kernel_bench_tables``
records them as result files (``--results``) through :mod:`cram.core.benchlog`. ``cram bench
kernels`` calls both.

- ``op="routed_attention"``: forward time of ``routed_attention`` (the path ``backend="auto"``
  picks on the device) for exactly ``round(p·T)`` routed positions per sequence, against
  ``F.scaled_dot_product_attention(..., is_causal=True)`` over all T positions. Each row also
  carries the GPU work count of the Triton forward at 64x64 tiles: ``tiles`` visited by the
  routed kernel, ``dense_tiles`` of a causal flash kernel, and their ratio ``tile_ratio``.
- ``op="ct_scan"``: forward + backward of the CT scan (``backend="auto"``) against the pure-torch
  loop with ``unbind`` slices (``ct_scan_reference``); ``tokens_per_s`` for both.

Timings are medians over ``reps`` rounds that alternate the kernel and its baseline (after one
warm-up each), with ``torch.set_num_threads(threads)``.

``shapes="realistic"`` (CUDA only; ``cram bench kernels --shapes realistic``) replaces the small
routed-attention shapes by GPU-sized ones (``REALISTIC``): bf16, B·H = 64, Dh ∈ {64, 128},
T ∈ {4096, 8192, 16384}, p ∈ {1, 0.5, 0.1, 0.02, 0.01}, forward and forward+backward, for each
backend in ``REALISTIC["backends"]`` (the hand-written Triton kernel, handed the full queries so
the gather is fused; the same kernel with its keys in one chunk, ``triton-nosplit``, where the
split heuristic would split them, as the ablation of that split; FlexAttention on the gathered
rows, block-mask construction included) against ``scaled_dot_product_attention`` restricted to
the flash backend on the same inputs.
"""

from __future__ import annotations

import os
import statistics
import time

from cram.core.errors import CramError
from cram.kernels._common import sync_device

ROUTED_P = (1.0, 0.5, 0.1, 0.02)
ROUTED_T = (1024, 4096)
ROUTED_SHAPE = {"B": 2, "H": 4, "Dh": 32}
SCAN_SHAPE = {"B": 8, "T": 2048}
SCAN_D = (64, 128)
TILE = 64
REALISTIC = {"B": 8, "H": 8, "Dh": (64, 128), "T": (4096, 8192, 16384),
             "p": (1.0, 0.5, 0.1, 0.02, 0.01), "passes": ("forward", "forward+backward"),
             "backends": ("triton", "triton-nosplit", "flex"), "reps": 5,
             "profile": (8192, 64, 0.02)}  # (T, Dh, p) whose rows also carry a kernel breakdown
SHAPES = ("small", "realistic")


class NeedsCudaError(CramError):
    """A benchmark that only means something on a GPU was asked for on a machine without one."""


def _paired_timer(fn, baseline, device, reps: int) -> tuple[float, float]:
    """Median wall times (ms) of ``fn()`` and ``baseline()``, measured alternately.

    One warm-up call each, then ``reps`` rounds alternating (fn, baseline) and (baseline, fn), so
    that drift in machine load and the cost of running first hit both sides alike.
    """

    def once(f):
        t0 = time.perf_counter()
        f()
        sync_device(device)
        return (time.perf_counter() - t0) * 1e3

    once(fn)
    once(baseline)
    a, b = [], []
    for i in range(reps):  # ABBA order: whichever runs first in a round does not always lose
        if i % 2 == 0:
            a.append(once(fn))
            b.append(once(baseline))
        else:
            b.append(once(baseline))
            a.append(once(fn))
    return statistics.median(a), statistics.median(b)


def routed_tile_counts(batch_idx, pos, seq_len: int, n_batch: int, window: int | None = None,
                       block_m: int = TILE, block_n: int = TILE) -> tuple[int, int]:
    """Key tiles the Triton forward visits per head, and the tiles of a dense causal kernel.

    Mirrors ``_fwd_kernel``'s loop bounds: a block of ``block_m`` sorted routed rows visits, for
    each sequence it touches, tiles from ``lo // block_n`` to ``max_pos // block_n``. Dense causal
    attention visits, per sequence and query block m, tiles 0 .. (last row of m) // block_n.
    """
    b_host, p_host = batch_idx.tolist(), pos.tolist()
    routed = 0
    for r0 in range(0, len(p_host), block_m):
        rows_b, rows_p = b_host[r0:r0 + block_m], p_host[r0:r0 + block_m]
        for b in sorted(set(rows_b)):
            ps = [p for bb, p in zip(rows_b, rows_p) if bb == b]
            lo = 0 if window is None else max(0, min(ps) - window + 1)
            routed += max(ps) // block_n - lo // block_n + 1
    dense_per_seq = sum((min(seq_len, (m + 1) * block_m) - 1) // block_n + 1
                        for m in range((seq_len + block_m - 1) // block_m))
    return routed, dense_per_seq * n_batch


def longest_program_steps(batch_idx, pos, chunk: int, block_m: int = TILE,
                          block_n: int = TILE) -> tuple[int, int]:
    """(steps, busy): key tiles the longest forward program walks, and programs with any work.

    Per head, no window. Mirrors ``_fwd_kernel`` with keys split into chunks of ``chunk`` keys
    (a multiple of ``block_n``; ``chunk >= T`` is no split): program (block, s) walks, in each
    sequence its rows touch, the tiles of chunk s up to the block's last position there. A
    program's tiles run one after another, so the longest sets a floor on the kernel's time
    however many SMs are free; ``busy`` counts the programs that walk at least one tile.
    """
    b_host, p_host = batch_idx.tolist(), pos.tolist()
    longest = busy = 0
    for r0 in range(0, len(p_host), block_m):
        rows_b, rows_p = b_host[r0:r0 + block_m], p_host[r0:r0 + block_m]
        per_chunk: dict[int, int] = {}
        for b in set(rows_b):
            last = max(p for bb, p in zip(rows_b, rows_p) if bb == b)
            for s in range(last // chunk + 1):
                hi = min(last, (s + 1) * chunk - 1)
                per_chunk[s] = per_chunk.get(s, 0) + (hi - s * chunk) // block_n + 1
        longest = max(longest, *per_chunk.values())
        busy += len(per_chunk)
    return longest, busy


def _routed_rows(seq_len, p, threads, device, reps, seed):
    import torch
    import torch.nn.functional as F

    from cram.kernels.routed_attention import routed_attention, select_backend

    B, H, Dh = ROUTED_SHAPE["B"], ROUTED_SHAPE["H"], ROUTED_SHAPE["Dh"]
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, seq_len, Dh, generator=gen).to(device) for _ in range(3))
    n_per = max(1, round(p * seq_len))
    sel = torch.zeros(B, seq_len, dtype=torch.bool)
    for b in range(B):
        sel[b, torch.randperm(seq_len, generator=gen)[:n_per]] = True
    batch_idx, pos = (x.to(device) for x in sel.nonzero(as_tuple=True))
    q_rows = q.transpose(1, 2)[batch_idx, pos].contiguous()  # (N, H, Dh)
    with torch.no_grad():
        ms, dense_ms = _paired_timer(
            lambda: routed_attention(q_rows, k, v, batch_idx, pos),
            lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), device, reps)
    tiles, dense_tiles = routed_tile_counts(batch_idx.cpu(), pos.cpu(), seq_len, B)
    return {
        "op": "routed_attention", "T": seq_len, "p": p, "ms": ms, "dense_ms": dense_ms,
        "ratio": ms / dense_ms, "tiles": tiles, "dense_tiles": dense_tiles,
        "tile_ratio": tiles / dense_tiles, "N": int(pos.numel()), "B": B, "H": H, "Dh": Dh,
        "D": None, "threads": threads, "device": device.type, "dtype": "float32",
        "backend": select_backend(device), "baseline": "SDPA causal (dense)", "pass": "forward",
    }


def _scan_rows(dim, threads, device, reps, seed):
    import torch

    from cram.kernels.ct_scan import ct_scan, ct_scan_reference, select_backend

    B, T = SCAN_SHAPE["B"], SCAN_SHAPE["T"]
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(B, T, dim, generator=gen).to(device).requires_grad_()
    gate = (0.1 * torch.rand(B, T, dim, generator=gen)).to(device).requires_grad_()
    w1 = (torch.randn(dim, dim, generator=gen) / dim**0.5).to(device).requires_grad_()
    h0 = torch.zeros(B, dim, device=device, requires_grad=True)
    backend = select_backend(u.device, u.dtype)

    def step(fn):
        return lambda: fn(u, gate, w1, h0).sum().backward()

    ms, dense_ms = _paired_timer(step(ct_scan), step(ct_scan_reference), device, reps)
    return {
        "op": "ct_scan", "T": T, "p": None, "ms": ms, "dense_ms": dense_ms, "ratio": ms / dense_ms,
        "speedup": dense_ms / ms, "tokens_per_s": B * T / ms * 1e3,
        "loop_tokens_per_s": B * T / dense_ms * 1e3, "B": B, "H": None, "Dh": None, "D": dim,
        "threads": threads, "device": device.type, "dtype": "float32", "backend": backend,
        "baseline": "torch loop with unbind", "pass": "forward+backward",
    }


def _realistic_inputs(seq_len, head_dim, device, seed):
    """Random bf16 (B, H, T, Dh) q, k, v, drawn on ``device``.

    Drawn there because a CPU draw of 3 x 134M values would dominate the benchmark at T = 16384.
    """
    import torch

    B, H = REALISTIC["B"], REALISTIC["H"]
    gen = torch.Generator(device=device).manual_seed(seed)
    return tuple(torch.randn(B, H, seq_len, head_dim, generator=gen, device=device,
                             dtype=torch.bfloat16) for _ in range(3))


def _realistic_selection(seq_len, p, device, seed):
    """(N,) batch_idx and pos: exactly round(p·T) random routed positions per sequence."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    n_per = max(1, round(p * seq_len))
    sel = torch.zeros(REALISTIC["B"], seq_len, dtype=torch.bool)
    for b in range(REALISTIC["B"]):
        sel[b, torch.randperm(seq_len, generator=gen)[:n_per]] = True
    return tuple(x.to(device) for x in sel.nonzero(as_tuple=True))


def _routed_call(backend, q, k, v, batch_idx, pos):
    """The routed forward as a model would run it on this backend: (N, H, Dh)."""
    from cram.kernels.routed_attention import routed_attention

    if backend == "flex":  # FlexAttention takes the gathered rows; the gather is timed too
        return routed_attention(q[batch_idx, :, pos], k, v, batch_idx, pos, backend="flex")
    if backend == "triton-nosplit":  # the kernel with each block's keys in one chunk
        from cram.kernels.routed_attention.triton import routed_attention_triton

        return routed_attention_triton(q, k, v, batch_idx, pos, n_splits=1)
    return routed_attention(q, k, v, batch_idx, pos, backend=backend)  # gather fused


def _triton_detail(backend, q, k, batch_idx, pos) -> dict:
    """What a Triton row ran with (empty for other backends).

    Key chunks, the longest program's 64x64 key tiles and the busy programs
    (:func:`longest_program_steps`), and the autotuned configs.
    """
    if not backend.startswith("triton"):
        return {}
    from cram.kernels.routed_attention import dense_dispatch
    from cram.kernels.routed_attention.triton import (
        key_chunk,
        key_splits,
        sm_count_of,
        tuned_configs,
    )

    n_rows = batch_idx.shape[0]
    if backend == "triton" and dense_dispatch(q, k, n_rows, None):
        return {"splits": None}
    seq_len = q.shape[2]
    wanted = 1 if backend == "triton-nosplit" else key_splits(n_rows, q.shape[1], seq_len,
                                                              sm_count_of(q.device))
    chunk, splits = key_chunk(seq_len, wanted)
    steps, busy = longest_program_steps(batch_idx.cpu(), pos.cpu(), chunk)
    return {"splits": splits, "longest_steps": steps, "busy_programs": busy * q.shape[1],
            "configs": tuned_configs()}


def _split_wanted(seq_len, p, head_dim) -> bool:
    """Whether ``triton`` splits the keys here (else ``triton-nosplit`` would repeat its row)."""
    import torch

    from cram.kernels.routed_attention.triton import key_splits, sm_count_of

    n_rows = max(1, round(p * seq_len)) * REALISTIC["B"]
    return key_splits(n_rows, REALISTIC["H"], seq_len, sm_count_of(torch.device("cuda"))) > 1


def kernel_breakdown(fn, device, calls: int = 3, top: int = 10) -> list[dict]:
    """Where ``fn()``'s time goes: the ``top`` ops by self time per call (torch.profiler).

    On CUDA the device time of each kernel, elsewhere CPU self time; one warm-up call first.
    Rows ``{name, ms, calls}``: milliseconds and launches per call of ``fn``.
    """
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    fn()
    sync_device(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        sync_device(device)

    def self_us(event):
        if not cuda:
            return event.self_cpu_time_total
        return getattr(event, "self_device_time_total", None) or getattr(
            event, "self_cuda_time_total", 0.0)

    events = sorted(prof.key_averages(), key=self_us, reverse=True)
    return [{"name": e.key[:100], "ms": round(self_us(e) / 1000 / calls, 4),
             "calls": round(e.count / calls, 2)} for e in events[:top] if self_us(e) > 0]


def _realistic_row(qkv, batch_idx, pos, p, backend, pass_, breakdown: bool = False):
    """One timed row: ``qkv`` the bf16 (B, H, T, Dh) inputs, the selection for fraction ``p``.

    ``breakdown``: also profile the routed call (``kernel_breakdown``) into ``row["profile"]``.
    """
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = qkv
    device, seq_len, head_dim = q.device, q.shape[2], q.shape[3]
    grad = pass_ != "forward"
    for x in (q, k, v):
        x.requires_grad_(grad)
    n_rows = int(pos.numel())
    d_rows = torch.randn(n_rows, q.shape[1], head_dim, device=device, dtype=q.dtype)
    d_full = torch.randn_like(q)

    def routed():
        out = _routed_call(backend, q, k, v, batch_idx, pos)
        if grad:  # autograd.grad, not backward: no .grad accumulation inside the timing
            torch.autograd.grad(out, (q, k, v), d_rows)

    def dense():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        if grad:
            torch.autograd.grad(out, (q, k, v), d_full)

    with torch.set_grad_enabled(grad):
        ms, dense_ms = _paired_timer(routed, dense, device, REALISTIC["reps"])
        profile = {"profile": kernel_breakdown(routed, device)} if breakdown else {}
    tiles, dense_tiles = routed_tile_counts(batch_idx.cpu(), pos.cpu(), seq_len, REALISTIC["B"])
    from cram.kernels.routed_attention import dense_dispatch

    path = "dense SDPA + row read" if backend == "triton" and dense_dispatch(q, k, n_rows, None) \
        else backend
    return {
        "op": "routed_attention", "shapes": "realistic", "T": seq_len, "p": p, "ms": ms,
        "dense_ms": dense_ms, "ratio": ms / dense_ms, "tiles": tiles, "dense_tiles": dense_tiles,
        "tile_ratio": tiles / dense_tiles, "N": n_rows, "B": REALISTIC["B"], "H": REALISTIC["H"],
        "Dh": head_dim, "D": None, "device": device.type, "dtype": "bfloat16", "backend": backend,
        "baseline": "SDPA flash (causal, dense)", "pass": pass_, "path": path,
    } | _triton_detail(backend, q, k, batch_idx, pos) | profile


def _realistic_order(backends, split_wanted=None) -> list[tuple[str, int, int, float]]:
    """(backend, T, Dh, p) in the order measured: the goal's rows first, every backend on each.

    Shapes by priority: the goal's (p = 0.02 at T >= 8192), then p = 1 and 0.01 there, then
    p = 0.1 and 0.5, then T = 4096; each shape runs every backend before the next shape, so that
    a run cut short by a time limit has measured what the goal is judged on, for every backend.
    ``triton-nosplit`` runs only where ``split_wanted(T, p, Dh)`` says the kernel splits (else it
    would repeat the ``triton`` row).
    """
    p_rank = {0.02: 0, 1.0: 1, 0.01: 2, 0.1: 3, 0.5: 4}
    shapes = sorted(((t, d, p) for t in REALISTIC["T"] for d in REALISTIC["Dh"]
                     for p in REALISTIC["p"]),
                    key=lambda s: (s[0] < 8192, p_rank.get(s[2], 9), s[0], s[1]))
    order = []
    for t, d, p in shapes:
        for b in backends:
            if b == "triton-nosplit" and (split_wanted is None or not split_wanted(t, p, d)):
                continue
            order.append((b, t, d, p))
    return order


def run_realistic_bench(device=None, seed: int = 0, progress: bool = True,
                        backends: tuple[str, ...] | None = None, on_row=None) -> list[dict]:
    """Routed attention at GPU-sized shapes (``REALISTIC``) against SDPA flash; CUDA only.

    ``on_row(row)`` is called after each row (``cram bench kernels --stream`` writes it out, so
    a run stopped by a time limit keeps what it measured). A row whose backend fails (a compile
    error, out of memory) is kept with ``error`` set and ``ms`` None; the others still run.

    Raises
    ------
    NeedsCudaError
        No CUDA device (the shapes would take hours on a CPU and say nothing about the GPU path).
    """
    import torch
    from tqdm import tqdm

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda":
        raise NeedsCudaError("cram bench kernels --shapes realistic: needs a CUDA device, and "
                             f"this machine has none (device {device}); use --shapes small here")
    order = _realistic_order(backends or REALISTIC["backends"], _split_wanted)
    rows, inputs = [], {}
    with tqdm(total=len(order) * len(REALISTIC["passes"]), desc="realistic bench",
              disable=not progress) as bar:
        for backend, seq_len, head_dim, p in order:
            if (seq_len, head_dim) not in inputs:
                inputs.clear()  # one input set on the device at a time
                torch.cuda.empty_cache()
                inputs[seq_len, head_dim] = _realistic_inputs(seq_len, head_dim, device, seed)
            qkv = inputs[seq_len, head_dim]
            batch_idx, pos = _realistic_selection(seq_len, p, device, seed)
            breakdown = (seq_len, head_dim, p) == REALISTIC["profile"]
            for pass_ in REALISTIC["passes"]:
                row = _guarded_row(qkv, batch_idx, pos, p, backend, pass_, breakdown)
                rows.append(row)
                if on_row is not None:
                    on_row(row)
                bar.update()
    return rows


def _guarded_row(qkv, batch_idx, pos, p, backend, pass_, breakdown=False) -> dict:
    """:func:`_realistic_row`, or an error row naming the failure (the bench goes on)."""
    import torch

    try:
        return _realistic_row(qkv, batch_idx, pos, p, backend, pass_, breakdown)
    except Exception as err:  # noqa: BLE001 - a failing backend is a result, not a crash
        torch.cuda.empty_cache()
        q = qkv[0]
        message = str(err).splitlines()[0][:300] if str(err) else ""
        return {"op": "routed_attention", "shapes": "realistic", "T": q.shape[2], "p": p,
                "ms": None, "dense_ms": None, "ratio": None, "N": int(pos.numel()),
                "B": q.shape[0], "H": q.shape[1], "Dh": q.shape[3], "device": "cuda",
                "dtype": "bfloat16", "backend": backend, "pass": pass_,
                "error": f"{type(err).__name__}: {message}"}


def _load_1min() -> float | None:
    """1-minute load average before a row (other jobs on a 2-core machine skew timings)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def run_kernel_bench(threads: int = 1, device=None, quick: bool = False, seed: int = 0,
                     progress: bool = True, shapes: str = "small",
                     parts: tuple[str, ...] = ("routed", "scan"), on_row=None) -> list[dict]:
    """Time the kernels against their baselines.

    Parameters
    ----------
    threads : int
        ``torch.set_num_threads`` during the benchmark (restored afterwards). State it in reports.
    device : str, torch.device or None
        ``None``: CUDA when present, else CPU.
    quick : bool
        Short sequences (T ∈ {256, 512}, scan T = 256) and fewer repeats, for smoke tests.
    seed : int
        Seed of the random inputs and routed positions.
    progress : bool
        Show a tqdm bar on stderr.
    shapes : {"small", "realistic"}
        ``"realistic"``: the routed-attention rows come from :func:`run_realistic_bench`
        (CUDA only, raises ``NeedsCudaError`` elsewhere) instead of the small shapes.
    parts : tuple of {"routed", "scan"}
        Which kernels to time (``cram bench kernels --parts``).
    on_row : callable or None
        Called with each row as soon as it is measured (``--stream``).

    Returns
    -------
    list of dict
        One row per (op, T, p) or (op, D): ``op, T, p, ms, dense_ms, ratio`` and details.
    """
    import torch
    from tqdm import tqdm

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if shapes not in SHAPES:
        raise ValueError(f"shapes must be one of {SHAPES}, got {shapes!r}")
    unknown = set(parts) - {"routed", "scan"}
    if unknown:
        raise ValueError(f"parts must be among routed, scan; got {sorted(unknown)}")
    realistic = []
    if shapes == "realistic" and "routed" in parts:
        realistic = run_realistic_bench(device, seed=seed, progress=progress, on_row=on_row)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    seq_lens = (256, 512) if quick else ROUTED_T
    reps = 2 if quick else 9
    small_routed = "routed" in parts and shapes == "small"
    jobs = [("routed", t, p) for t in seq_lens for p in ROUTED_P] if small_routed else []
    jobs += [("scan", d, None) for d in SCAN_D] if "scan" in parts else []
    rows = []
    saved_scan_t = SCAN_SHAPE["T"]
    if quick:
        SCAN_SHAPE["T"] = 256
    try:
        for kind, a, p in tqdm(jobs, desc="kernel bench", disable=not progress, file=None):
            load = _load_1min()
            if kind == "routed":
                row = _routed_rows(a, p, threads, device, reps, seed)
            else:
                row = _scan_rows(a, threads, device, reps, seed)
            rows.append(row | {"load_1min": load})
            if on_row is not None:
                on_row(rows[-1])
    finally:
        SCAN_SHAPE["T"] = saved_scan_t
        torch.set_num_threads(old_threads)
    return realistic + rows


def write_kernel_bench_tables(rows: list[dict], argv: list[str] | None = None,
                              results=None, seed: int = 0) -> list:
    """Record the benchmark tables as result files via :mod:`cram.core.benchlog`; their paths.

    ``results`` is the results folder (default ``$CRAM_RESULTS_DIR``, else ./results); the
    project's is the repository's ``results/``. One result file each for routed attention, the
    GPU-sized routed-attention rows, the CT scan and, when present, the model-level rows (``op``
    = ``model_infer`` / ``model_step``, produced elsewhere): their columns are the common ``op,
    T, p, ms, dense_ms, ratio`` followed by every other key the rows carry. Each title is its
    study (:func:`cram.core.results.study_id`), so a device or thread count is a study of its
    own. ``seed`` is the one :func:`run_kernel_bench` drew inputs and positions with (the
    model-level rows name their runs instead).
    """
    from cram.core.benchlog import record_benchmark
    from cram.core.results import study_id

    tables = []
    routed = [r for r in rows if r["op"] == "routed_attention" and r.get("shapes") != "realistic"]
    realistic = [r for r in rows if r.get("shapes") == "realistic"]
    scan = [r for r in rows if r["op"] == "ct_scan"]
    model = [r for r in rows if r["op"] in ("model_infer", "model_step")]
    if routed:
        tables.append(_routed_spec(routed) + (routed,))
    if realistic:
        tables.append(_realistic_spec(realistic) + (realistic,))
    if scan:
        s0 = scan[0]
        tables.append((
            f"CT scan vs the torch loop ({s0['device']}, {s0['threads']} thread(s))",
            ["T", "D", "B", "ms", "dense_ms", "speedup", "tokens_per_s", "loop_tokens_per_s",
             "backend", "threads", "device", "load_1min"],
            "Forward + backward, fp32, full W_1; dense_ms is the pure-torch loop with unbind "
            "slices (ct_scan_reference); speedup = dense_ms / ms; tokens/s = B·T per "
            "forward+backward.", scan))
    if model:
        common = ["op", "T", "p", "ms", "dense_ms", "ratio"]
        extra = [k for r in model for k in r if k not in common]
        tables.append(("CRAM vs dense Transformer, whole model",
                       common + list(dict.fromkeys(extra)),
                       "ratio = ms / dense_ms (the dense Transformer of the same width).", model))
    return [record_benchmark(study_id(title), title, part, columns, notes, argv=argv,
                             results=results, seeds=None if part is model else [seed])
            for title, columns, notes, part in tables]


def _routed_spec(rows: list[dict]) -> tuple[str, list[str], str]:
    """(title, columns, notes) of the small routed-attention rows."""
    r0 = rows[0]
    columns = ["T", "p", "N", "ms", "dense_ms", "ratio", "tiles", "dense_tiles", "tile_ratio",
               "backend", "threads", "device", "load_1min"]
    notes = (f"Forward only, fp32, B={r0['B']}, H={r0['H']}, Dh={r0['Dh']}; exactly round(p·T) "
             "random routed positions per sequence; medians of 9 rounds alternating routed "
             "and dense. ratio = ms / dense_ms. "
             "tiles / dense_tiles: 64x64 key tiles the Triton forward visits against a dense "
             "causal flash kernel (a work count, exact for the GPU kernel whatever device timed "
             "the row). load_1min: the machine's 1-minute load average before the row (other "
             "jobs skew timings).")
    title = f"Routed attention vs dense causal SDPA ({r0['device']}, {r0['threads']} thread(s))"
    return title, columns, notes


def _realistic_spec(rows: list[dict]) -> tuple[str, list[str], str]:
    """(title, columns, notes) of the GPU-sized routed-attention rows."""
    r0 = rows[0]
    columns = ["T", "Dh", "p", "pass", "backend", "path", "splits", "longest_steps", "N", "ms",
               "dense_ms", "ratio", "tile_ratio", "dtype", "device"]
    columns += ["error"] if any(r.get("error") for r in rows) else []
    notes = (f"bf16, B={r0['B']}, H={r0['H']}; exactly round(p·T) random routed positions per "
             "sequence; dense_ms: SDPA restricted to the flash backend, causal, all T positions, "
             "on the same inputs; medians of "
             f"{REALISTIC['reps']} rounds alternating routed and dense. triton: the hand-written "
             "kernel handed the full queries (gather fused), autotuned blocks, keys split "
             "into `splits` chunks; triton-nosplit: the same with one chunk; flex: "
             "FlexAttention on the gathered rows, block-mask construction included. "
             "forward+backward: gradients of q, k and v.")
    return "Routed attention vs flash attention, GPU-sized shapes", columns, notes


def _realistic_table(rows: list[dict]) -> tuple[str, str, str]:
    """(title, markdown table, notes) of the GPU-sized routed-attention rows."""
    from cram.core.benchlog import markdown_table

    title, columns, notes = _realistic_spec(rows)
    return title, markdown_table(rows, columns), notes
