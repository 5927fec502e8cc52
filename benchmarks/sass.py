"""Static machine code of the fused step's matrix kernel, compiled for an H100/H200 (sm_90) on any machine.

``python -m benchmarks.sass`` compiles ``matrix_step_kernel`` for each setting below with Triton's own
``ptxas`` (no GPU needed), disassembles it with the bundled ``nvdisasm`` and prints, per setting, the
instructions per value (static count x 32 lanes / values of one tile: a program of the full-``v`` settings has
no loops, so this is close to the dynamic count that ``ncu`` reports, minus the statistics branch that 1
program in 8 takes; the factored settings loop over the tiles of a column strip, and their count holds the
loop's set-up once, so it overstates theirs a little), the
registers a thread holds and its stack (spill) bytes, and the most frequent opcodes. The rank-0 step is
issue-bound on an H200 (BENCHMARKS.md), so fewer instructions per value and enough warps per SM (registers)
are what a kernel change has to buy; whether it does is measured on the GPU (``mango bench gpu --parts
variants``). A modelled figure: the local Triton version may differ from the GPU machine's.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any

import triton
import triton.language as tl
import tyro
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from client.compression import fused
from client.compression.kernels import triton_step as ts
from client.compression.optimizer import auto_rounding_is_stochastic

#: The 4-bit state as it was until sessions 30-31 (NF4 codes, factored ``v``, stochastic rounding): the base
#: of the 4-bit cases that keep measuring it under their old labels.
OLD4: dict[str, Any] = {"BITS": 4, "STOCHASTIC": True, "MODE": 1, "BLOCK": 64, "ROWS": 4, "FACTORED": True}
#: (label, constexpr overrides of the rank-0 8-bit step) - the settings' kernel specializations.
CASES: list[tuple[str, dict[str, Any]]] = [
    ("r0/b8/g0", {}),  # stochastic_rounding="auto": the 8-bit codes to nearest
    ("r0/b8/g0 stochastic", {"STOCHASTIC": True}),
    ("r0/b8/g0 late loads", {"EARLY": False}),
    ("r0/b8/g0 hash draws", {"STOCHASTIC": True, "RNG": 1}),
    ("r0/b8/g0 philox8", {"STOCHASTIC": True, "RNG": 2}),
    ("r0/b8/g0 hash8", {"STOCHASTIC": True, "RNG": 3}),
    ("r0/b8/g0 unchecked philox8", {"CHECK": False, "STOCHASTIC": True, "RNG": 2}),
    ("r0/b8/g0 no-EF", {"EF": False}),
    ("r0/b8/g0 unchecked", {"CHECK": False}),
    ("r0/b8/g0 unaligned", {"ALIGN": False}),  # fused.MATRIX_ALIGN off, or a table that fails the check
    # the 8-bit cases above compile at the shipped tile (fused.MATRIX_TILE_BY_BITS: 512 values, two blocks,
    # uncapped since session 40); these name it, and 256 values (one block) at the same cap
    ("r0/b8/g0 tile 512", {"ROWS": 2}),
    ("r0/b8/g0 no-EF tile 512", {"EF": False, "ROWS": 2}),
    ("r0/b8/g0 tile 256", {"ROWS": 1}),
    ("r0/b8/g0 tensor skip", {"CHECK": True}),  # fused.SKIP_GRAIN = "tensor": the pre-pass's check
    ("r0/b8/g0.5", {"SHIFT": True}),
    ("r0/b8/g0.5 hash draws", {"SHIFT": True, "STOCHASTIC": True, "RNG": 1}),
    ("r0/b8/g0.5 philox8", {"SHIFT": True, "STOCHASTIC": True, "RNG": 2}),
    ("r0/b16/g0", {"BITS": 16}),
    ("r0/b4/g0", OLD4),
    ("r0/b4/g0 nearest", {**OLD4, "STOCHASTIC": False}),
    ("r0/b4/g0 compare", {**OLD4, "SEARCH": 0}),
    ("r0/b4/g0 nearest compare", {**OLD4, "STOCHASTIC": False, "SEARCH": 0}),
    ("r0/b4/g0 no-EF", {**OLD4, "EF": False}),
    ("r0/b4/g0 unchecked", {**OLD4, "CHECK": False}),
    ("r0/b4/g1", {**OLD4, "SHIFT": True}),
    ("r0/b4/g0 uniform", {**OLD4, "MODE": 0}),
    # 4 bits' defaults since session 30: the uniform code and a full v (and NF4 with a full v), rounded to
    # nearest since session 31 (the rows above pin the stochastic rounding of their time)
    ("r0/b4/g0 uniform full-v", {"BITS": 4, "MODE": 0, "BLOCK": 64, "ROWS": 4}),
    # at 1024 values a program (session 39's H100 tune sweep: the fewer-instructions kernel's no-EF row
    # fastest there, the landed kernel's slowest in the variants part)
    ("r0/b4/g0 uniform full-v tile 1024", {"BITS": 4, "MODE": 0, "BLOCK": 64, "ROWS": 16}),
    ("r0/b4/g0 uniform full-v no-EF", {"BITS": 4, "MODE": 0, "BLOCK": 64, "ROWS": 4, "EF": False}),
    ("r0/b4/g0 uniform full-v no-EF tile 1024", {"BITS": 4, "MODE": 0, "BLOCK": 64, "ROWS": 16, "EF": False}),
    (
        "r0/b4/g0 uniform full-v stochastic",
        {"BITS": 4, "MODE": 0, "BLOCK": 64, "ROWS": 4, "STOCHASTIC": True},
    ),
    ("r0/b4/g0 nf4 full-v", {"BITS": 4, "MODE": 1, "BLOCK": 64, "ROWS": 4, "STOCHASTIC": True}),
    ("r0/b4/g0 partials", {**OLD4, "PARTIALS": 4}),
    # 2-3 bits with the factored v (their default until session 33), under their old labels
    ("r0/b3/g0", {"BITS": 3, "BLOCK": 64, "ROWS": 4, "FACTORED": True, "STRIP": True}),
    ("r0/b2/g0", {"BITS": 2, "BLOCK": 64, "ROWS": 4, "FACTORED": True, "STRIP": True}),
    # 2-3 bits' defaults since session 33: a full v, 3 bits rounded to nearest, 2 bits stochastically
    ("r0/b3/g0 full-v", {"BITS": 3, "BLOCK": 64, "ROWS": 4}),
    ("r0/b2/g0 full-v", {"BITS": 2, "BLOCK": 64, "ROWS": 4}),
    ("r0/b2/g0 full-v nearest", {"BITS": 2, "BLOCK": 64, "ROWS": 4, "STOCHASTIC": False}),
    ("r0/b4/g1 full-v", {"BITS": 4, "BLOCK": 64, "ROWS": 4, "SHIFT": True}),
]

_SIGNATURE = {
    "prog_ptr": "*i32", "addr_ptr": "*i64", "meta_ptr": "*i64", "grad_ptr": "*i64", "norm_ptr": "*fp32",
    "seed_ptr": "*i64", "tab_ptr": "*fp32", "mean_ptr": "*fp32", "pid0": "i32", "part_ptr": "*fp32",
    "sample_ptr": "*fp32", "skip_ptr": "*i32", "xsq_ptr": "*fp32", "scal_ptr": "*fp32",
    "eps": "fp32", "beta1": "fp32", "beta2": "fp32", "ef_beta": "fp32", "gamma": "fp32",
}  # fmt: skip


@dataclass
class SassArgs:
    """Static instructions per value and registers of the fused matrix kernel, compiled for sm_90 (no GPU)."""

    cases: str = ""
    """comma-separated labels of CASES to compile (empty: all)"""
    arch: int = 90
    """compute capability to compile for (90: H100 / H200)"""
    max_regs: int | None = None
    """register cap for every case (``fused.MAX_REGS``: 0 none, > 0 that cap); None: each case at the cap
    ``fused.run`` gives its width (``fused.MAX_REGS_BY_BITS``, ``fused.EARLY_LOADS``). A cap below what a
    case needs shows as stack (spill) bytes"""


def compile_case(overrides: dict[str, Any], arch: int = 90) -> dict[str, Any]:
    """Compile one specialization of ``matrix_step_kernel``; its instructions per value, registers, stack
    bytes and opcode counts."""
    consts: dict[str, Any] = dict(
        PDTYPE=tl.float32, BITS=8, MODE=0, BLOCK=256, ROWS=1, EF=True, SHIFT=False, FACTORED=False,
        STRIP=False, STOCHASTIC=None, FRESH=False, SRC=0, STATS_EVERY=ts.STATS_EVERY.value, FULL=True, RNG=0,
        CHECK=True, PARTIALS=0, SEARCH=1, TILE_SKIP=False,  # NF4: the cells search unless a case says compare
        ALIGN=fused.MATRIX_ALIGN,  # aligned tables, as a model's own tensors are (a case can say False)
        PAIRS=fused.FOUR_BIT_PAIRS,
    )  # fmt: skip
    consts.update(overrides)
    if "ROWS" not in overrides:  # the tile fused.run lays a width out with (fused.matrix_tile)
        consts["ROWS"] = max(fused.matrix_tile(consts["BITS"]) // consts["BLOCK"], 1)
    if consts["STOCHASTIC"] is None:  # as MangoAdamW's default rounds: stochastic_rounding="auto"
        consts["STOCHASTIC"] = auto_rounding_is_stochastic(consts["BITS"])
    if "CHECK" not in overrides and fused.tiles_test_themselves(consts["FACTORED"], consts["STRIP"]):
        consts.update(CHECK=False, TILE_SKIP=True)  # as fused.run launches it: no pre-pass
    # the load order and register cap fused.run picks (an override of EARLY keeps its order, with its cap)
    consts["EARLY"], regs = fused.matrix_loads(consts["BITS"], bool(consts["SHIFT"]), consts.get("EARLY"))
    signature = dict(_SIGNATURE, **dict.fromkeys(consts, "constexpr"))
    options: dict[str, Any] = {"num_warps": fused.NUM_WARPS}
    if regs:
        options["maxnreg"] = regs
    kernel = triton.compile(
        ASTSource(ts.matrix_step_kernel, signature, constexprs=consts),
        target=GPUTarget("cuda", arch, 32),
        options=options,
    )
    n_lines, ops, usage = disassemble(kernel.asm["cubin"])
    return {
        "per_value": n_lines * 32 / (consts["BLOCK"] * consts["ROWS"]),
        "registers": usage.get("REG", -1),
        "stack_bytes": usage.get("STACK", -1),
        "ops": ops,
    }


def disassemble(cubin: bytes) -> tuple[int, collections.Counter[str], dict[str, int]]:
    """A compiled kernel's instruction count, opcode counts and resource usage (``REG``, ``STACK``,
    ``SHARED``: ``cuobjdump -res-usage``), with the ``nvdisasm`` / ``cuobjdump`` that Triton bundles."""
    tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        sass = subprocess.run([os.path.join(tools, "nvdisasm"), "-c", f.name], capture_output=True, text=True)
        res = subprocess.run(
            [os.path.join(tools, "cuobjdump"), "-res-usage", f.name], capture_output=True, text=True
        )
    lines = [ln for ln in sass.stdout.splitlines() if re.search(r"/\*[0-9a-f]{4}\*/", ln)]
    ops: collections.Counter[str] = collections.Counter()
    for ln in lines:
        m = re.search(r"\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9_]+)", ln)
        if m:
            ops[m.group(1)] += 1
    usage = {k: int(v) for k, v in re.findall(r"\b(REG|STACK|SHARED):(\d+)", res.stdout)}
    return len(lines), ops, usage


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(SassArgs, args=argv, prog="python -m benchmarks.sass", description=SassArgs.__doc__)
    want = {c.strip() for c in args.cases.split(",") if c.strip()}
    unknown = want - {label for label, _ in CASES}
    if unknown:
        raise SystemExit(f"unknown case(s) {sorted(unknown)}; choose from {[label for label, _ in CASES]}")
    print(f"| setting | instructions / value | registers | stack B | top opcodes (sm_{args.arch}, static) |")
    print("|---|---:|---:|---:|---|")
    saved = fused.MAX_REGS
    for label, overrides in CASES:
        if want and label not in want:
            continue
        fused.MAX_REGS = args.max_regs if args.max_regs is not None else saved
        try:
            r = compile_case(overrides, args.arch)
        finally:
            fused.MAX_REGS = saved
        top = " ".join(f"{op} {n}" for op, n in r["ops"].most_common(6))
        print(
            f"| {label} | {r['per_value']:.0f} | {r['registers']} | {r['stack_bytes']} | {top} |", flush=True
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
