"""CPU fast paths of the CT-ODE scan: a C++ extension, with numba as the fallback.

Both are a forward and a hand-written backprop through time (derivation in
``kernels/ct_scan/README.md``), joined for autograd and ``torch.compile`` by ``op.py``: the
forward keeps ``h`` and ``a = tanh(z)``; the backward walks time in reverse once, and ``dW`` is
one GEMM over all steps afterwards.

The C++ source (``ct_scan_cpu.cpp``) is compiled lazily by ``torch.utils.cpp_extension.load`` the
first time it is needed, into ``$CRAM_EXTENSIONS_DIR`` (default ``~/.cache/cram/torch_extensions``),
and reused from there afterwards. The build folder is keyed by the torch version, the Python
environment and the CPU (a hash of its model name and feature flags), because ``-march=native``
code built on one CPU may not run on another. When no compiler works, the reason (``no C++
compiler``, or the compiler's last error lines) is kept in ``_ext_error`` and the caller falls
back to numba (or the loop) and says so once.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sys
import threading
from pathlib import Path

import torch

_SOURCE = Path(__file__).with_name("ct_scan_cpu.cpp")
_lock = threading.Lock()
_ext = None
_ext_error: str | None = None
_numba_error: str | None = None
_numba_fns = None


def extension_dir() -> Path:
    """Folder that holds the compiled extension (created if missing)."""
    root = (os.environ.get("CRAM_EXTENSIONS_DIR")
            or Path.home() / ".cache" / "cram" / "torch_extensions")
    # one build per torch version *and* environment: two venvs sharing a cache would otherwise
    # rebuild the extension each time the other one used it (different include paths)
    env = hashlib.sha1(sys.prefix.encode()).hexdigest()[:8]
    path = Path(root) / f"torch{torch.__version__.replace('+', '_')}-{env}-cpu{cpu_key()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cpu_key() -> str:
    """8 hex digits naming this CPU: a hash of its model name and feature flags.

    ``-march=native`` compiles for the build machine's instruction set, so an extension built on
    one CPU is never loaded on another (a shared home folder or a copied cache would otherwise
    crash with an illegal instruction).
    """
    desc = f"{platform.machine()}|{platform.processor()}"
    try:
        info = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        info = []
    for field in ("model name", "flags", "Features", "CPU part"):
        line = next((x for x in info if x.split(":")[0].strip() == field), "")
        desc += "|" + line.split(":", 1)[-1].strip()
    return hashlib.sha1(desc.encode()).hexdigest()[:8]


def compiler() -> str | None:
    """The C++ compiler torch's extension builder will call (``$CXX`` or ``c++``), if on PATH."""
    return shutil.which(os.environ.get("CXX", "c++"))


def build_failure_reason(exc: BaseException, n_lines: int = 3) -> str:
    """One line saying why the C++ build failed: the compiler's last error lines if any.

    torch's builder raises with the whole ninja/compiler output in the message; the lines that
    carry ``error`` are the informative ones, else the last non-empty lines.
    """
    lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
    # the first line repeats the whole compile command; ninja's last line says only that it stopped
    body = [x for x in lines[1:] if not x.startswith(("ninja: build stopped", "[1/", "[2/"))]
    errors = [x for x in body if "error" in x.lower()]
    picked = [x[:240] for x in (errors or body or lines)[-n_lines:]]
    return f"{type(exc).__name__}: " + (" | ".join(picked) if picked else "(no message)")


STALE_LOCK_SECONDS = 600  # far longer than a build (~30-60 s); a lock this old was left by a kill


def _clear_stale_lock(lock: Path) -> None:
    """Remove a build lock left behind by a process killed mid-build.

    torch's ``load`` waits forever while the lock file exists, so a build interrupted once would
    otherwise hang every later run.
    """
    import time
    import warnings

    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age > STALE_LOCK_SECONDS:
        warnings.warn(f"removing a stale C++ build lock ({lock}, {age:.0f} s old)", stacklevel=3)
        lock.unlink(missing_ok=True)


def load_extension():
    """Build (once) and return the C++ module, or ``None`` (the reason kept in ``_ext_error``)."""
    global _ext, _ext_error
    if _ext is not None or _ext_error is not None:
        return _ext
    with _lock:
        if _ext is not None or _ext_error is not None:
            return _ext
        if os.environ.get("CRAM_DISABLE_CPP"):
            _ext_error = "CRAM_DISABLE_CPP is set"
            return None
        if compiler() is None:
            _ext_error = f"no C++ compiler ({os.environ.get('CXX', 'c++')} is not on PATH)"
            return None
        try:
            from torch.utils.cpp_extension import load

            build_dir = extension_dir()
            _clear_stale_lock(build_dir / "lock")
            if not _is_built(build_dir):  # the first use compiles for ~30 s: say so
                print("cram: compiling the C++ CT-scan kernel once (about 30 s; cached in "
                      f"{build_dir})...", file=sys.stderr, flush=True)
            _ext = load(
                name="cram_ct_scan_cpu",
                sources=[str(_SOURCE)],
                extra_cflags=["-O3", "-march=native"],
                build_directory=str(build_dir),
                verbose=False,
            )
        except Exception as exc:  # noqa: BLE001 - no ninja, broken headers, compile errors: fall back
            _ext_error = build_failure_reason(exc)
            _ext = None
    return _ext


def _is_built(build_dir) -> bool:
    """Whether a compiled extension already lies in ``build_dir`` (then loading is quick)."""
    return any(build_dir.glob("cram_ct_scan_cpu*.so"))


def cpp_forward(u, gate, w1, h0):
    """Forward: ``(h, a)``, each (B, T, D) in the input dtype."""
    # u, gate: (B, T, D); w1: (D, D) or (D,); h0: (B, D)
    return tuple(_ext.forward(u, gate, w1, h0))


def cpp_backward(grad_h, gate, w1, h0, h, a):
    """Backprop through time: ``(du, dgate, dw1, dh0)``."""
    return tuple(_ext.backward(grad_h.contiguous(), gate, w1, h0, h, a))


def unavailable_reason(which: str) -> str | None:
    """Why the ``"cpp"`` or ``"numba"`` path could not be built (None: not tried, or built)."""
    return _ext_error if which == "cpp" else _numba_error


# --------------------------------------------------------------------------------------- numba


def _build_numba():
    import numba
    import numpy as np

    @numba.njit(cache=True, fastmath=False)
    def fwd(u, g, w, h0, diagonal):  # pragma: no cover - compiled
        batch, steps, dim = u.shape
        h = np.empty_like(u)
        a = np.empty_like(u)
        z = np.empty(dim, dtype=u.dtype)
        for b in range(batch):
            prev = h0[b].copy()
            for t in range(steps):
                if diagonal:
                    for i in range(dim):
                        z[i] = prev[i] * w[0, i] + u[b, t, i]
                else:
                    for i in range(dim):
                        z[i] = u[b, t, i]
                    for j in range(dim):  # w holds W^T here
                        hj = prev[j]
                        for i in range(dim):
                            z[i] += hj * w[j, i]
                for i in range(dim):
                    ai = np.tanh(z[i])
                    a[b, t, i] = ai
                    prev[i] = prev[i] + g[b, t, i] * ai
                    h[b, t, i] = prev[i]
        return h, a

    @numba.njit(cache=True, fastmath=False)
    def bwd(go, g, w, a, diagonal):  # pragma: no cover - compiled
        batch, steps, dim = g.shape
        dz = np.empty_like(g)
        dg = np.empty_like(g)
        dh0 = np.empty((batch, dim), dtype=g.dtype)
        e = np.empty(dim, dtype=g.dtype)
        en = np.empty(dim, dtype=g.dtype)
        for b in range(batch):
            e[:] = 0
            for t in range(steps - 1, -1, -1):
                for i in range(dim):
                    ei = e[i] + go[b, t, i]
                    dg[b, t, i] = ei * a[b, t, i]
                    dz[b, t, i] = ei * g[b, t, i] * (1 - a[b, t, i] * a[b, t, i])
                    en[i] = ei
                if diagonal:
                    for i in range(dim):
                        en[i] += dz[b, t, i] * w[0, i]
                else:
                    for i in range(dim):  # w holds W here
                        dzi = dz[b, t, i]
                        for j in range(dim):
                            en[j] += dzi * w[i, j]
                e[:] = en
            dh0[b] = e
        return dz, dg, dh0

    return fwd, bwd


def load_numba():
    """Return the compiled (fwd, bwd) numba pair or ``None`` with the reason in ``_numba_error``."""
    global _numba_fns, _numba_error
    if _numba_fns is None and _numba_error is None:
        try:
            _numba_fns = _build_numba()
        except Exception as exc:  # noqa: BLE001 - numba missing or broken
            _numba_error = f"{type(exc).__name__}: {exc}"
    return _numba_fns


def _h_prev(h0, h):  # (B, D), (B, T, D) -> (B, T, D) = [h0, h_1 .. h_{T-1}]
    return torch.cat([h0.unsqueeze(1), h[:, :-1]], dim=1)


def numba_forward(u, gate, w1, h0):
    """Forward: ``(h, a)``, each (B, T, D) in the input dtype."""
    fwd, _ = _numba_fns
    diagonal = w1.dim() == 1
    w_np = (w1.reshape(1, -1) if diagonal else w1.t()).detach().contiguous().numpy()
    h, a = fwd(u.detach().contiguous().numpy(), gate.detach().contiguous().numpy(), w_np,
               h0.detach().contiguous().numpy(), diagonal)
    return torch.from_numpy(h), torch.from_numpy(a)  # (B, T, D) each


def numba_backward(grad_h, gate, w1, h0, h, a):
    """Backprop through time: ``(du, dgate, dw1, dh0)``."""
    _, bwd = _numba_fns
    diagonal = w1.dim() == 1
    w_np = (w1.reshape(1, -1) if diagonal else w1).detach().contiguous().numpy()
    dz, dg, dh0 = bwd(grad_h.detach().contiguous().numpy(), gate.detach().contiguous().numpy(),
                      w_np, a.detach().contiguous().numpy(), diagonal)
    dz, dg, dh0 = torch.from_numpy(dz), torch.from_numpy(dg), torch.from_numpy(dh0)
    hp = _h_prev(h0, h)
    dim = h.shape[-1]
    dw = (dz * hp).sum((0, 1)) if diagonal else dz.reshape(-1, dim).t() @ hp.reshape(-1, dim)
    return dz, dg, dw, dh0
