"""Session 41: the projection kernel compiled for sm_90 on this CPU (no GPU), with and without the norm sum
(``NORMS``), at R = 16, 32, 64: registers, stack, shared memory and the opcodes that tell a pipelined
tensor-core loop (HGMMA / HMMA, LDGSTS / UTMALDG async copies, plain LDG loads). Static: what the GPU
measured (call 92) is the judge. Usage: python results/cpu-s41/proj_sass.py"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from benchmarks.sass import disassemble
from client.compression import fused
from client.compression.kernels import triton_proj as tp

SIG = {
    "prog_ptr": "*i32", "addr_ptr": "*i64", "meta_ptr": "*i64", "grad_ptr": "*i64", "norm_ptr": "*fp32",
    "sample_ptr": "*fp32",
}  # fmt: skip


def compile_proj(r: int, norms: bool, trans: bool = False, stages: int | None = None) -> dict[str, object]:
    consts = dict(
        PDTYPE=tl.float32, R=r, BK=fused.PROJ_BK, BN=fused.PROJ_BN, PRECISION="tf32", TRANS=trans, NORMS=norms
    )
    opts: dict[str, object] = {"num_warps": fused.PROJ_WARPS}
    if stages is not None:
        opts["num_stages"] = stages
    k = triton.compile(
        ASTSource(tp.project_kernel, dict(SIG, **dict.fromkeys(consts, "constexpr")), constexprs=consts),
        target=GPUTarget("cuda", 90, 32),
        options=opts,
    )
    _, ops, usage = disassemble(k.asm["cubin"])
    ttgir = k.asm.get("ttgir", "")
    return {
        "regs": usage.get("REG", "?"),
        "stack": usage.get("STACK", "?"),
        "shared": usage.get("SHARED", "?"),
        "dyn_shared": k.metadata.shared,
        "stages": k.metadata.num_stages,
        "instr": sum(ops.values()),
        "mma": {o: n for o, n in ops.items() if "MMA" in o or "GMMA" in o},
        "async": {o: n for o, n in ops.items() if o in ("LDGSTS", "UTMALDG", "LDGDEPBAR", "SYNCS")},
        "ldg": ops.get("LDG", 0),
        "lds": ops.get("LDS", 0),
        "sts": ops.get("STS", 0),
        "bar": ops.get("BAR", 0),
        "converts": ttgir.count("convert_layout"),
        "async_copies": ttgir.count("async_copy_global_to_local"),
    }


if __name__ == "__main__":
    for r in (16, 32, 64):
        for norms in (False, True):
            print(f"R={r:2d} NORMS={norms!s:5}", compile_proj(r, norms), flush=True)
