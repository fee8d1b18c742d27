"""Compile every Triton kernel for a GPU architecture ahead of time, on a machine without a GPU.

The Triton tests on a CPU run the kernels in the interpreter, which never lowers them: a kernel
can pass there and still fail to compile, or compile to something that cannot launch (more shared
memory than a block may have) or that spills registers to local memory. Triton's NVIDIA backend
ships ``ptxas`` and ``cuobjdump``, so each kernel variant the GPU path can launch is compiled here
to a cubin for ``sm_<arch>`` (90: H100 / H200), and its resources are read back:

- ``shared``: dynamic shared memory (Triton's allocation) plus static, in bytes, against the
  architecture's per-block maximum (``SHARED_LIMIT``);
- ``registers`` per thread and ``local`` bytes per thread (non-zero: registers spilled).

Variants: routed attention's forward, dQ and dK/dV at every autotuned config (bf16, head dims 64
and 128, full queries, key split on) and at the default config with each flag and dtype changed,
the two combine kernels, and the CT scan's forward and backward (full W_1 at D = 64 and 128,
diagonal). Usage::

    python -m cram.kernels.compile_check [--arch 90] [--json]

``TRITON_INTERPRET=1`` must be unset (the interpreter replaces the kernels); the command says so
in one line when it is set.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

SHARED_LIMIT = {90: 232448, 80: 166912, 89: 101376}  # bytes per block (opt-in maximum)


@dataclass(frozen=True)
class Variant:
    """One kernel specialisation: which kernel, pointer dtypes, constexprs and launch options."""

    kernel: str  # "<module>.<function>"
    dtype: str  # element type of the data pointers (Triton spelling: bf16, fp16, fp32)
    constexprs: dict = field(hash=False)
    num_warps: int = 4
    num_stages: int = 3

    def label(self) -> str:
        """One line naming the kernel, dtype, flags, tiles, warps and stages."""
        hidden = ("PREC", "BLOCK_D") if "DH" in self.constexprs else ("PREC",)
        flags = ",".join(f"{k}={v}" for k, v in self.constexprs.items() if k not in hidden)
        return f"{self.kernel} {self.dtype} [{flags}] w{self.num_warps} s{self.num_stages}"


# pointer arguments by kind: data (the variant's dtype), int64 indices, fp32 statistics and
# workspaces; every other non-constexpr argument is an int32 scalar except ``scale``
DATA_POINTERS = {"Q", "K", "V", "OUT", "DO", "DQ", "DK", "DV", "u_ptr", "g_ptr", "w_ptr",
                 "h0_ptr", "h_ptr", "go_ptr"}
INDEX_POINTERS = {"BIDX", "POS", "ROW_LO", "ROW_HI"}
FP32_POINTERS = {"LSE", "DELTA", "WS_ACC", "WS_M", "WS_L", "WS_DQ", "a_ptr", "dz_ptr", "dg_ptr",
                 "dh0_ptr"}
FLOAT_SCALARS = {"scale"}


def _routed_variants() -> list[Variant]:
    from cram.kernels.routed_attention import triton as rt

    def query(dh, bm, bn, dtype="bf16", **flags):
        prec = "ieee" if dtype == "fp32" else "tf32"
        return {"HAS_WINDOW": False, "GATHER": True, "SPLIT": True, "DH": dh, "BLOCK_M": bm,
                "BLOCK_N": bn, "BLOCK_D": max(16, 1 << (dh - 1).bit_length()), "PREC": prec,
                **flags}

    out = []
    for name in ("_fwd_kernel", "_dq_kernel"):
        for dh in (64, 128):
            for bm, bn, warps, stages in rt.QUERY_CONFIGS:
                out.append(Variant(f"routed.{name}", "bf16", query(dh, bm, bn), warps, stages))
        for dtype, flags in (("bf16", {"SPLIT": False}), ("bf16", {"HAS_WINDOW": True}),
                             ("bf16", {"GATHER": False}), ("fp16", {}), ("fp32", {})):
            out.append(Variant(f"routed.{name}", dtype, query(64, 64, 64, dtype, **flags)))
    for dh in (64, 128):
        for bm, bn, warps, stages in rt.KEY_CONFIGS:
            consts = query(dh, bm, bn, FINE_N=rt.FINE)
            consts.pop("SPLIT")
            out.append(Variant("routed._dkv_kernel", "bf16", consts, warps, stages))
    for dh in (64, 128):
        block_d = max(16, 1 << (dh - 1).bit_length())
        out.append(Variant("routed._combine_fwd_kernel", "bf16",
                           {"DH": dh, "BLOCK_M": 64, "BLOCK_D": block_d}))
        out.append(Variant("routed._combine_dq_kernel", "bf16",
                           {"GATHER": True, "DH": dh, "BLOCK_M": 64, "BLOCK_D": block_d}))
    return out


def _scan_variants() -> list[Variant]:
    out = []
    for name in ("_fwd_kernel", "_bwd_kernel"):
        for diagonal, block in ((False, 64), (False, 128), (True, 128)):
            out.append(Variant(f"ct_scan.{name}", "fp32",
                               {"DIAGONAL": diagonal, "BLOCK_D": block}))
    return out


def variants() -> list[Variant]:
    """Every kernel specialisation this check compiles."""
    return _routed_variants() + _scan_variants()


def _function(kernel: str):
    module, name = kernel.split(".")
    if module == "routed":
        from cram.kernels.routed_attention import triton as mod
    else:
        from cram.kernels.ct_scan import triton as mod
    return getattr(mod, name)


def _signature(fn, variant: Variant) -> dict[str, str]:
    sig = {}
    for param in fn.params:
        name = param.name
        if param.is_constexpr:
            sig[name] = "constexpr"
        elif name in INDEX_POINTERS:
            sig[name] = "*i64"
        elif name in FP32_POINTERS:
            sig[name] = "*fp32"
        elif name in FLOAT_SCALARS:
            sig[name] = "fp32"
        elif name in DATA_POINTERS:
            sig[name] = f"*{variant.dtype}"
        else:
            sig[name] = "i32"
    return sig


def _cuobjdump() -> Path | None:
    import triton.backends.nvidia as nvidia

    path = Path(nvidia.__file__).parent / "bin" / "cuobjdump"
    return path if path.is_file() else None


def _resources(cubin: bytes) -> dict:
    """Registers, local (spill) and static shared bytes of the cubin's kernel (cuobjdump)."""
    tool = _cuobjdump()
    if tool is None:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        text = subprocess.run([str(tool), "-res-usage", str(path)], capture_output=True,
                              text=True, check=False).stdout
    found = dict(re.findall(r"\b(REG|SHARED|LOCAL|STACK):(\d+)", text))
    return {"registers": int(found.get("REG", 0)), "local": int(found.get("LOCAL", 0)),
            "stack": int(found.get("STACK", 0)), "static_shared": int(found.get("SHARED", 0))}


def compile_variant(variant: Variant, arch: int = 90) -> dict:
    """Compile one variant to a cubin for ``sm_<arch>``; a row with its resources or its error."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = _function(variant.kernel)
    row = {"kernel": variant.kernel, "label": variant.label(), "arch": arch,
           "num_warps": variant.num_warps, "num_stages": variant.num_stages}
    try:
        src = ASTSource(fn=fn, signature=_signature(fn, variant), constexprs=variant.constexprs)
        compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                                  options={"num_warps": variant.num_warps,
                                           "num_stages": variant.num_stages})
    except Exception as err:  # noqa: BLE001 - a kernel that does not compile is the finding
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        return row | {"ok": False, "error": f"{type(err).__name__}: {first}"}
    res = _resources(compiled.asm["cubin"])
    shared = compiled.metadata.shared + res.get("static_shared", 0)
    limit = SHARED_LIMIT.get(arch)
    return row | res | {"shared": shared, "shared_limit": limit,
                        "ok": limit is None or shared <= limit}


def run(arch: int = 90, progress: bool = True, only=None) -> list[dict]:
    """Compile every variant (or those ``only(variant)`` keeps); rows in :func:`variants` order."""
    from tqdm import tqdm

    chosen = [v for v in variants() if only is None or only(v)]
    return [compile_variant(v, arch) for v in tqdm(chosen, desc=f"compile sm_{arch}",
                                                     disable=not progress)]


def representative(variant: Variant) -> bool:
    """The subset CI compiles: each kernel at its largest tiles, and with each flag changed."""
    c, name = variant.constexprs, variant.kernel
    if "combine" in name:
        return c["DH"] == 128
    if name.endswith(("_fwd_kernel", "_dq_kernel")) and name.startswith("routed"):
        largest = c["DH"] == 128 and c["BLOCK_M"] == c["BLOCK_N"] == 128
        default = (c["DH"], c["BLOCK_M"], c["BLOCK_N"]) == (64, 64, 64)
        changed = variant.dtype != "bf16" or not (c["SPLIT"] and c["GATHER"]) or c["HAS_WINDOW"]
        return largest or (default and changed)
    if name.endswith("_dkv_kernel"):
        return c["DH"] == 128 and (c["BLOCK_M"], c["BLOCK_N"]) == (32, 128)
    return c["BLOCK_D"] == 128  # the CT scan: full W_1 at D = 128, and diagonal


def main(argv: list[str] | None = None) -> int:
    """Compile every variant and print one line each (or JSON); 1 if any failed."""
    parser = argparse.ArgumentParser(prog="python -m cram.kernels.compile_check",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability x10 (90: H100)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("compile_check: unset TRITON_INTERPRET (the interpreter replaces the kernels)",
              file=sys.stderr)
        return 2
    rows = run(args.arch, progress=not args.json)
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            status = "ok" if r["ok"] else "FAIL"
            detail = r.get("error") or (f"shared {r['shared']} B, {r.get('registers')} regs, "
                                        f"local {r.get('local')} B, stack {r.get('stack')} B")
            print(f"{status:4} {r['label']}: {detail}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
