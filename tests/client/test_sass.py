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
    """Round-to-nearest drops the Philox draws: fewer instructions a value than stochastic rounding, both
    within the register cap the fused step gives them (the early loads' at 8 bits, ``fused.EARLY_LOADS``),
    and the late-loads case within the width's old cap (``fused.MAX_REGS_BY_BITS``): a real compile's."""
    rows = _table("r0/b8/g0,r0/b8/g0 stochastic,r0/b8/g0 late loads")
    nearest, stochastic, late = rows["r0/b8/g0"], rows["r0/b8/g0 stochastic"], rows["r0/b8/g0 late loads"]
    assert 50 < int(nearest[0]) < int(stochastic[0]) < 1000
    cap = fused.EARLY_LOADS[(8, False)]
    assert int(stochastic[1]) <= cap and int(nearest[1]) <= cap
    assert int(late[1]) <= fused.MAX_REGS_BY_BITS[8] < cap
    assert "FFMA" in stochastic[3]


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
