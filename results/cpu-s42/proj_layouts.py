"""Session 42: how Triton compiles the projection kernel for sm_90 on this CPU (no GPU), by how the norm sum
reads the gradient tile (``project_kernel``'s ``NORMS``: 0 none, 1 the product's tile squared, 2 a second load
a turn ahead) and the alignment promise (``ALIGN``), at R = 16, 32, 64, both orientations: the shared-memory
layouts of the tiles, the async copies' widths (bytes: ``0x4`` / ``0x10``), plain global loads, registers and
spill (stack) bytes. Static. Loads the kernel file by path, so any Python with Triton runs it (no torch):
``python results/cpu-s42/proj_layouts.py`` (this venv: Triton 3.9; the GPU machine has 3.6:
``python -m venv /tmp/t36 && /tmp/t36/bin/pip install triton==3.6.0``)."""

from __future__ import annotations

import collections
import importlib.util
import os
import pathlib
import re
import subprocess
import tempfile

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

KERNEL = pathlib.Path(__file__).parents[2] / "client/compression/kernels/triton_proj.py"
SIG = {
    "prog_ptr": "*i32", "addr_ptr": "*i64", "meta_ptr": "*i64", "grad_ptr": "*i64", "norm_ptr": "*fp32",
    "sample_ptr": "*fp32",
}  # fmt: skip
BK, BN, WARPS = 32, 64, 4  # fused.PROJ_BK, PROJ_BN, PROJ_WARPS


def usage(cubin: bytes) -> dict[str, int]:
    """``REG`` / ``STACK`` of a cubin (``cuobjdump -res-usage``, bundled with Triton)."""
    tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        res = subprocess.run(
            [os.path.join(tools, "cuobjdump"), "-res-usage", f.name], capture_output=True, text=True
        )
    return {k: int(v) for k, v in re.findall(r"\b(REG|STACK):(\d+)", res.stdout)}


def main() -> None:
    spec = importlib.util.spec_from_file_location("triton_proj", KERNEL)
    assert spec is not None and spec.loader is not None
    tp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tp)
    print(f"triton {triton.__version__}, sm_90, BK={BK} BN={BN} warps={WARPS}, PRECISION=tf32")
    for r in (16, 32, 64):
        for trans in (False, True):
            for align in (False, True):
                for norms in (0, 1, 2):
                    consts = dict(
                        PDTYPE=tl.float32, R=r, BK=BK, BN=BN, PRECISION="tf32", TRANS=trans, NORMS=norms,
                        ALIGN=align,
                    )  # fmt: skip
                    src = ASTSource(
                        tp.project_kernel, dict(SIG, **dict.fromkeys(consts, "constexpr")), constexprs=consts
                    )
                    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": WARPS})
                    ttgir, ptx = k.asm["ttgir"], k.asm["ptx"]
                    shared = [
                        m.split("<{", 1)[1].rstrip("}>")
                        for m in re.findall(r"^#shared\d* = .*$", ttgir, re.M)
                    ]
                    pat = r"cp\.async\.c[ag]\.shared\.global \[[^]]*\], \[[^]]*\], (\w+)"
                    copies = dict(collections.Counter(re.findall(pat, ptx)))
                    use = usage(k.asm["cubin"])
                    head = f"R={r:2d} trans={trans!s:5} ALIGN={align!s:5} NORMS={norms}"
                    print(
                        f"{head}: regs {use.get('REG')} stack {use.get('STACK')}, async copies by bytes"
                        f" {copies}, plain loads {ptx.count('ld.global')}, shared {shared}",
                        flush=True,
                    )
    back_sig = {
        "prog_ptr": "*i32", "addr_ptr": "*i64", "meta_ptr": "*i64", "norm_ptr": "*fp32", "scale_ptr": "*fp32",
        "scal_ptr": "*fp32",  # the step scalars (session 44; "decay", "step_size" fp32 arguments before)
    }  # fmt: skip
    for r in (16, 64):
        for trans in (False, True):
            for align in (False, True):
                consts = dict(
                    PDTYPE=tl.float32, R=r, BM=64, BN=128, PRECISION="tf32", TRANS=trans, ALIGN=align
                )
                sig = dict(back_sig, **dict.fromkeys(consts, "constexpr"))
                src = ASTSource(tp.backproject_kernel, sig, constexprs=consts)
                k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": WARPS})
                use = usage(k.asm["cubin"])
                ops = dict(
                    collections.Counter(re.findall(r"\b((?:ld|st)\.global(?:\.v\d)?)\.b32", k.asm["ptx"]))
                )
                print(
                    f"backproject R={r:2d} trans={trans!s:5} ALIGN={align!s:5}: regs {use.get('REG')} stack"
                    f" {use.get('STACK')}, 32-bit global accesses by width {ops}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
