"""Session 42: the matrix kernel's static instructions per value, registers and spills with and without the
alignment promise (``ALIGN``, ``fused.MATRIX_ALIGN``) for the rank-0 widths' shipped specializations
(``benchmarks.sass.CASES``; at 4 bits also with ``PAIRS``, ``fused.FOUR_BIT_PAIRS``: today's defaults are the ``full-v`` 2-4-bit cases and the plain 8-bit ones),
compiled for sm_90 on this CPU. Static (modelled). Usage: python results/cpu-s42/matrix_align.py"""

from __future__ import annotations

from benchmarks.sass import CASES, compile_case

LABELS = [
    "r0/b8/g0", "r0/b8/g0 no-EF", "r0/b8/g0.5", "r0/b16/g0", "r0/b4/g0 uniform full-v",
    "r0/b4/g0 uniform full-v no-EF", "r0/b4/g1 full-v", "r0/b3/g0 full-v", "r0/b2/g0 full-v",
]  # fmt: skip

if __name__ == "__main__":
    cases = dict(CASES)
    print("| case | instructions / value, unaligned -> aligned | registers | stack B |")
    print("|---|---|---|---|")
    for label in LABELS:
        a, b = (compile_case({**cases[label], "ALIGN": align}) for align in (False, True))
        if "b4" in label:  # the 4-bit code bytes loaded once a pair (fused.FOUR_BIT_PAIRS)
            c = compile_case({**cases[label], "ALIGN": True, "PAIRS": True})
            print(
                f"| {label}, PAIRS | aligned {c['per_value']:.0f} | {c['registers']} | {c['stack_bytes']} |"
            )
        regs = f"{a['registers']} -> {b['registers']}"
        print(
            f"| {label} | {a['per_value']:.0f} -> {b['per_value']:.0f} | {regs} |"
            f" {a['stack_bytes']} -> {b['stack_bytes']} |",
            flush=True,
        )
