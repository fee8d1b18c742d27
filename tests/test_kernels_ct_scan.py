"""CT-ODE scan: every backend against the pure-torch loop, forward and backward.

Triton tests run on the kernel's device: CUDA when present (compiled for real), else the CPU under
``TRITON_INTERPRET=1`` (set by the root conftest). The same test bodies run on both.
"""

from __future__ import annotations

import os

import pytest
import torch

from cram.kernels._common import KernelInputError
from cram.kernels.ct_scan import cpu as ct_cpu
from cram.kernels.ct_scan import ct_scan, ct_scan_reference, select_backend
from cram.kernels.ct_scan import op as ct_op

TOL = {torch.float64: 1e-9, torch.float32: 2e-5, torch.float16: 3e-2, torch.bfloat16: 5e-2}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # where the Triton kernels run
INTERPRETED = DEVICE == "cpu"
BF16 = pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
    INTERPRETED, reason="the Triton interpreter's bf16 is wrong (upstream bug): bf16 on CUDA only"))


def _need_triton():
    pytest.importorskip("triton")
    if INTERPRETED and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1")


def _inputs(batch, steps, dim, diagonal, dtype=torch.float32, seed=0, h0=True, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, steps, dim, generator=gen, dtype=torch.float64)
    gate = torch.rand(batch, steps, dim, generator=gen, dtype=torch.float64) * 0.5
    w1 = torch.randn(dim, generator=gen, dtype=torch.float64) if diagonal else (
        torch.randn(dim, dim, generator=gen, dtype=torch.float64) / dim**0.5)
    h = torch.randn(batch, dim, generator=gen, dtype=torch.float64) if h0 else None
    return [x if x is None else x.to(device=device, dtype=dtype).requires_grad_()
            for x in (u, gate, w1, h)]


def _fwd_bwd(fn, inputs, seed=1):
    out = fn(*inputs)
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.device, out.dtype)
    grads = torch.autograd.grad((out * weight).sum(), [x for x in inputs if x is not None])
    return out, grads


def _assert_close(got, want, tol, what):
    got, want = got.double(), want.double()
    assert torch.isfinite(got).all(), f"{what}: non-finite values"
    scale = want.abs().max().clamp_min(1.0)
    err = (got - want).abs().max() / scale
    assert err <= tol, f"{what}: max rel error {err:.3g} > {tol}"


@pytest.fixture(scope="module")
def cpp_ext():
    ext = ct_cpu.load_extension()
    if ext is None:
        pytest.skip(f"C++ extension did not build here: {ct_cpu._ext_error}")
    return ext


@pytest.mark.parametrize("diagonal", [False, True])
@pytest.mark.parametrize("steps", [1, 63, 100])
@pytest.mark.parametrize("dim", [5, 64, 72])
def test_cpp_matches_loop_fp32(cpp_ext, diagonal, steps, dim):
    # B = 6: one group of 4 sequences stepped together (the blocked matvec) plus 2 single ones
    inputs = _inputs(6, steps, dim, diagonal)
    out, grads = _fwd_bwd(lambda *a: ct_op.ct_scan_cpp(*a), inputs)
    ref_inputs = [x.detach().double().requires_grad_() for x in inputs]
    ref, ref_grads = _fwd_bwd(ct_scan_reference, ref_inputs)
    _assert_close(out, ref, TOL[torch.float32], "h")
    for name, g, rg in zip(["du", "dgate", "dw1", "dh0"], grads, ref_grads):
        _assert_close(g, rg, 5e-5, name)


@pytest.mark.parametrize("diagonal", [False, True])
def test_cpp_gradcheck_fp64(cpp_ext, diagonal):
    inputs = _inputs(5, 9, 4, diagonal, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda *a: ct_op.ct_scan_cpp(*a), inputs)


def test_cpp_fast_tanh_is_accurate(cpp_ext):
    # a zero state and unit gate make h_1 = tanh(u_1): the float tanh of the extension
    x = torch.linspace(-30, 30, 200_001).reshape(1, 1, -1)
    w1 = torch.zeros(x.shape[-1])
    h = cpp_ext.forward(x, torch.ones_like(x), w1, torch.zeros(1, x.shape[-1]))[0]
    assert (h - torch.tanh(x.double())).abs().max() < 5e-7
    assert h.abs().max() <= 1.0


@pytest.mark.parametrize("diagonal", [False, True])
def test_numba_matches_loop(diagonal):
    if ct_cpu.load_numba() is None:
        pytest.skip(f"numba unavailable: {ct_cpu._numba_error}")
    inputs = _inputs(2, 33, 7, diagonal, dtype=torch.float64)
    out, grads = _fwd_bwd(lambda *a: ct_op.ct_scan_numba(*a), inputs)
    ref, ref_grads = _fwd_bwd(ct_scan_reference, inputs)
    _assert_close(out, ref, 1e-10, "h")
    for g, rg in zip(grads, ref_grads):
        _assert_close(g, rg, 1e-10, "grad")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, BF16])
@pytest.mark.parametrize("diagonal", [False, True])
@pytest.mark.parametrize("steps,dim", [(1, 16), (13, 5), (20, 32)])
def test_triton_matches_loop(dtype, diagonal, steps, dim):
    _need_triton()
    from cram.kernels.ct_scan.op import ct_scan_triton

    inputs = _inputs(2, steps, dim, diagonal, dtype, device=DEVICE)
    assert all(x.device.type == DEVICE for x in inputs)
    out, grads = _fwd_bwd(ct_scan_triton, inputs)
    ref_inputs = [x.detach().double().requires_grad_() for x in inputs]
    ref, ref_grads = _fwd_bwd(ct_scan_reference, ref_inputs)
    assert out.dtype == dtype and out.shape == ref.shape and out.device.type == DEVICE
    _assert_close(out, ref, TOL[dtype], "h")
    for name, g, rg in zip(["du", "dgate", "dw1", "dh0"], grads, ref_grads):
        assert g.dtype == dtype
        _assert_close(g, rg, 4 * TOL[dtype], name)


@pytest.mark.parametrize("diagonal", [False, True])
def test_triton_entry_point_on_kernel_device(diagonal):
    """``ct_scan(backend="triton")`` runs the kernel (not a fallback) on the test device."""
    _need_triton()
    inputs = _inputs(3, 9, 8, diagonal, device=DEVICE)
    assert select_backend(inputs[0].device, inputs[0].dtype, "triton") == "triton"
    out, grads = _fwd_bwd(lambda *a: ct_scan(*a, backend="triton"), inputs)
    ref, ref_grads = _fwd_bwd(ct_scan_reference,
                              [x.detach().double().requires_grad_() for x in inputs])
    _assert_close(out, ref, TOL[torch.float32], "h")
    for g, rg in zip(grads, ref_grads):
        _assert_close(g, rg, 4 * TOL[torch.float32], "grad")


def test_public_entry_point_dispatch_and_defaults():
    u, gate, w1, _ = _inputs(2, 11, 6, False, h0=False)
    out = ct_scan(u, gate, w1)  # h0=None means zeros
    ref = ct_scan_reference(u, gate, w1, torch.zeros(2, 6))
    _assert_close(out, ref, TOL[torch.float32], "h")
    assert select_backend(torch.device("cpu"), torch.bfloat16) == "loop"
    assert ct_scan(u[:, :0], gate[:, :0], w1).shape == (2, 0, 6)
    # non-contiguous input is copied, not misread
    u_nc = u.detach().transpose(0, 1).contiguous().transpose(0, 1)
    assert not u_nc.is_contiguous()
    _assert_close(ct_scan(u_nc, gate, w1), ref, TOL[torch.float32], "non-contiguous u")


def test_bad_input_is_rejected():
    u, gate, w1, h0 = _inputs(2, 5, 4, False)
    with pytest.raises(KernelInputError, match="gate shape"):
        ct_scan(u, gate[:, :4], w1, h0)
    with pytest.raises(KernelInputError, match="w1 must be"):
        ct_scan(u, gate, w1[:3], h0)
    with pytest.raises(KernelInputError, match="h0 must be"):
        ct_scan(u, gate, w1, h0[:1])
    with pytest.raises(KernelInputError, match="floating point"):
        ct_scan(u, gate, w1.long(), h0)


def test_mixed_dtypes_are_promoted():
    # autocast gives a bf16 drive while W_1 stays fp32: the scan runs in fp32
    u, gate, w1, h0 = _inputs(2, 7, 4, False)
    out = ct_scan(u.bfloat16(), gate, w1, h0)
    assert out.dtype == torch.float32
    ref = ct_scan_reference(u.detach().bfloat16().float(), gate.detach(), w1.detach(), h0.detach())
    _assert_close(out, ref, TOL[torch.float32], "h")
    out.sum().backward()
    assert u.grad is not None and u.grad.dtype == torch.float32
    with pytest.raises(KernelInputError, match="backend"):
        ct_scan(u, gate, w1, h0, backend="fortran")


@pytest.mark.gpu
@pytest.mark.parametrize("diagonal", [False, True])
def test_cuda_entry_point_runs_triton(diagonal):
    inputs = _inputs(4, 257, 64, diagonal, device="cuda")
    assert select_backend(inputs[0].device, inputs[0].dtype) == "triton"
    out, grads = _fwd_bwd(ct_scan, inputs)
    ref, ref_grads = _fwd_bwd(ct_scan_reference,
                              [x.detach().double().requires_grad_() for x in inputs])
    _assert_close(out, ref, 1e-4, "h")
    for g, rg in zip(grads, ref_grads):
        _assert_close(g, rg, 1e-3, "grad")


def test_no_compiler_falls_back_once_with_a_notice():
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from cram.kernels.ct_scan import ct_scan, ct_scan_reference, select_backend\n"
        "u = torch.randn(2, 9, 4); g = torch.rand(2, 9, 4); w = torch.randn(4, 4)\n"
        "for _ in range(3): out = ct_scan(u, g, w)\n"
        "assert torch.allclose(out, ct_scan_reference(u, g, w), atol=1e-5)\n"
        "print(select_backend(u.device, u.dtype))\n"
    )
    env = {**__import__("os").environ, "CRAM_DISABLE_CPP": "1"}
    res = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                         text=True, env=env, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() in {"numba", "loop"}
    assert res.stderr.count("C++ extension unavailable") == 1


def _fallback_reason(tmp_path, cxx: str) -> str:
    """Stderr of a fresh process whose C++ build uses compiler ``cxx`` (a fresh cache folder)."""
    import subprocess
    import sys

    code = ("import torch\n"
            "from cram.kernels.ct_scan import select_backend\n"
            "print(select_backend(torch.device('cpu'), torch.float32))\n")
    env = {**os.environ, "CXX": cxx, "CRAM_EXTENSIONS_DIR": str(tmp_path / "ext")}
    env.pop("CRAM_DISABLE_CPP", None)
    res = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                         text=True, env=env, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() in {"numba", "loop"}
    return next(x for x in res.stderr.splitlines() if "C++ extension unavailable" in x)


def test_failed_build_says_why(tmp_path):
    """No compiler, or a compiler error: the one notice names the cause, not 'build stopped'."""
    line = _fallback_reason(tmp_path, str(tmp_path / "no-such-compiler"))
    assert "no C++ compiler" in line and "no-such-compiler" in line
    fake = tmp_path / "fakecxx"
    fake.write_text("#!/bin/sh\n"
                    'case "$*" in *version*|-v) echo "gcc version 12.2.0"; exit 0;; esac\n'
                    'echo "ct_scan_cpu.cpp:1:1: error: fake compiler failure" >&2\nexit 1\n')
    fake.chmod(0o755)
    line = _fallback_reason(tmp_path, str(fake))
    assert "error: fake compiler failure" in line
    assert "-march=native" not in line  # the command line itself is left out


def test_build_cache_is_keyed_by_cpu(monkeypatch, tmp_path):
    """-march=native code must not be loaded on another CPU: the folder names the CPU."""
    monkeypatch.setenv("CRAM_EXTENSIONS_DIR", str(tmp_path))
    here = ct_cpu.extension_dir()
    assert here.name.endswith(f"-cpu{ct_cpu.cpu_key()}") and len(ct_cpu.cpu_key()) == 8
    monkeypatch.setattr(ct_cpu.platform, "processor", lambda: "another-cpu-model")
    assert ct_cpu.extension_dir() != here


def test_build_failure_reason_picks_error_lines():
    exc = RuntimeError("Error building extension 'x': [1/2] c++ -O3 -march=native -c x.cpp\n"
                       "x.cpp:3:5: error: 'foo' was not declared\nx.cpp:9:1: warning: w\n"
                       "ninja: build stopped: subcommand failed.")
    reason = ct_cpu.build_failure_reason(exc)
    assert reason == "RuntimeError: x.cpp:3:5: error: 'foo' was not declared"
    assert ct_cpu.build_failure_reason(OSError("")) == "OSError: (no message)"


def test_stale_build_lock_is_cleared_fresh_one_kept(tmp_path):
    """A lock left by a build killed long ago must not hang later runs; a young one is respected."""
    import os
    import time

    from cram.kernels.ct_scan.cpu import STALE_LOCK_SECONDS, _clear_stale_lock

    lock = tmp_path / "lock"
    lock.touch()
    _clear_stale_lock(lock)
    assert lock.exists()
    old = time.time() - STALE_LOCK_SECONDS - 5
    os.utime(lock, (old, old))
    with pytest.warns(UserWarning, match="stale C\\+\\+ build lock"):
        _clear_stale_lock(lock)
    assert not lock.exists()


@pytest.mark.parametrize("path", ["cpp", "numba", "triton"])
@pytest.mark.parametrize("diagonal", [False, True])
def test_scan_operators_pass_opcheck(path, diagonal):
    """``cram::ct_scan_forward`` / ``_backward``: schema, shape functions, autograd registration.

    ``torch.library.opcheck`` runs the operator eagerly, on fake tensors and through AOT autograd
    and checks they agree: what ``torch.compile`` relies on to trace through the scan.
    """
    from cram.kernels.ct_scan.op import ct_scan_forward

    device, dtype = "cpu", torch.float64
    if path == "cpp":
        if ct_cpu.load_extension() is None:
            pytest.skip(f"C++ extension did not build here: {ct_cpu._ext_error}")
        dtype = torch.float32
    elif path == "numba" and ct_cpu.load_numba() is None:
        pytest.skip(f"numba unavailable: {ct_cpu._numba_error}")
    elif path == "triton":
        _need_triton()
        device, dtype = DEVICE, torch.float32
    u, gate, w1, h0 = _inputs(2, 5, 4, diagonal, dtype, device=device)
    result = torch.library.opcheck(ct_scan_forward, (u, gate, w1, h0, path))
    assert set(result.values()) == {"SUCCESS"}, result


def test_a_module_with_the_scan_compiles_to_one_graph_and_matches_eager():
    """No graph break at the scan: dynamo traces the working memory whole (fullgraph=True)."""
    from cram.models.working_memory import CTODE

    torch.manual_seed(0)
    module = CTODE(16, 8)
    x, dtau = torch.randn(2, 11, 16), torch.rand(2, 11)
    eager = module(x, dtau)
    eager_grad = torch.autograd.grad(eager.square().sum(), module.w1)[0]
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")(x, dtau)
    compiled_grad = torch.autograd.grad(compiled.square().sum(), module.w1)[0]
    torch.testing.assert_close(compiled, eager)
    torch.testing.assert_close(compiled_grad, eager_grad)
