"""Session 42: the shared-memory layouts Triton gives the projection's gradient tile, compiled for sm_90 on
this CPU (no GPU), by how the norm sum reads it (``project_kernel``'s ``NORMS``: 0 none, 1 the product's tile
squared, 2 a second load) at R = 16, 32, 64, both orientations. Static. Loads the kernel file by path, so any
Python with Triton runs it (no torch): ``python results/cpu-s42/proj_layouts.py`` (this venv: Triton 3.9; the
GPU machine has 3.6: ``python -m venv /tmp/t36 && /tmp/t36/bin/pip install triton==3.6.0``)."""

from __future__ import annotations

import importlib.util
import pathlib
import re

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


def main() -> None:
    spec = importlib.util.spec_from_file_location("triton_proj", KERNEL)
    assert spec is not None and spec.loader is not None
    tp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tp)
    print(f"triton {triton.__version__}, sm_90, BK={BK} BN={BN} warps={WARPS}, PRECISION=tf32")
    for r in (16, 32, 64):
        for trans in (False, True):
            for norms in (0, 1, 2):
                consts = dict(
                    PDTYPE=tl.float32, R=r, BK=BK, BN=BN, PRECISION="tf32", TRANS=trans, NORMS=norms
                )
                k = triton.compile(
                    ASTSource(
                        tp.project_kernel, dict(SIG, **dict.fromkeys(consts, "constexpr")), constexprs=consts
                    ),
                    target=GPUTarget("cuda", 90, 32),
                    options={"num_warps": WARPS},
                )
                ttgir = k.asm["ttgir"]
                shared = [
                    m.split("<{", 1)[1].rstrip("}>") for m in re.findall(r"^#shared\d* = .*$", ttgir, re.M)
                ]
                ptx = k.asm["ptx"]
                pat = r"cp\.async\.c[ag]\.shared\.global \[[^]]*\], \[[^]]*\], (\w+)"
                copies = sorted(set(re.findall(pat, ptx)))
                n_async = ttgir.count("async_copy_global_to_local")
                print(
                    f"R={r:2d} trans={trans!s:5} NORMS={norms}: async copies {n_async}, copy bytes"
                    f" {'/'.join(copies) or '-'}, plain loads {ptx.count('ld.global')}, shared {shared}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
