"""``benchmarks.sass``: the fused matrix kernel compiled for sm_90 on the CPU (Triton's bundled ptxas).

Compiling needs Triton's real JIT, which ``TRITON_INTERPRET=1`` (``make test``) replaces: the command runs
in a subprocess without it, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from client.compression import fused

sass = pytest.importorskip("benchmarks.sass")


def _table(cases: str, *extra: str) -> dict[str, list[str]]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.sass", "--cases", cases, *extra],
        capture_output=True, text=True, env=env, timeout=300, check=True,
    ).stdout  # fmt: skip
    rows = [ln.strip("|").split("|") for ln in out.splitlines() if ln.startswith("| r")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


def test_static_counts_see_what_stochastic_rounding_costs() -> None:
    """Round-to-nearest drops the Philox draws: fewer instructions a value than stochastic rounding, at the
    8-bit tile and register cap the fused step gives them (``fused.MATRIX_TILE_BY_BITS``: uncapped, and
    round-to-nearest holds it without spilling); at one block a program, the early loads' cap
    (``fused.EARLY_LOADS``) holds both and the late loads' (``fused.MAX_REGS_BY_BITS``) that case: a real
    compile's."""
    rows = _table("r0/b8/g0,r0/b8/g0 stochastic")
    nearest, stochastic = rows["r0/b8/g0"], rows["r0/b8/g0 stochastic"]
    assert 50 < int(nearest[0]) < int(stochastic[0]) < 1000
    assert fused.matrix_loads(8, False) == (True, fused.MATRIX_TILE_BY_BITS[8][1])
    assert int(nearest[1]) <= 255 and int(nearest[2]) == 0
    assert "FFMA" in stochastic[3]


def test_one_block_programs_fit_the_early_loads_cap() -> None:
    """At one block a program (the 8-bit tile before session 40) and the early loads' cap
    (``fused.EARLY_LOADS``) the round-to-nearest kernel holds without spilling."""
    cap = fused.EARLY_LOADS[(8, False)]
    row = _table("r0/b8/g0 tile 256", "--max-regs", str(cap))["r0/b8/g0 tile 256"]
    assert int(row[1]) <= cap and int(row[2]) == 0


def test_unknown_case_is_named() -> None:
    with pytest.raises(SystemExit, match="unknown case"):
        sass.main(["--cases", "r9/b9"])


def test_max_regs_caps_every_case_and_a_low_cap_spills() -> None:
    """``--max-regs`` compiles each case at that cap instead of its width's: the 2-bit full-v kernel at its
    default cap (``fused.MAX_REGS_BY_BITS[2]``) holds at most that many registers, and at a cap of 128
    it takes more registers and fewer stack (spill) bytes."""
    case = "r0/b2/g0 full-v"
    default, wide = _table(case)[case], _table(case, "--max-regs", "128")[case]
    assert int(default[1]) <= fused.MAX_REGS_BY_BITS[2] < int(wide[1]) <= 128
    assert int(wide[2]) < int(default[2])
