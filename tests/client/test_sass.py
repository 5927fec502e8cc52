"""``benchmarks.sass``: the fused matrix kernel compiled for sm_90 on the CPU (Triton's bundled ptxas)."""

from __future__ import annotations

import pytest

sass = pytest.importorskip("benchmarks.sass")


def test_static_counts_see_what_stochastic_rounding_costs() -> None:
    """Round-to-nearest drops the Philox draws: fewer instructions a value than stochastic rounding, at the
    8-bit register cap, and every count is a real compile's (positive, opcodes listed)."""
    stochastic = sass.compile_case({})
    nearest = sass.compile_case({"STOCHASTIC": False})
    assert 50 < nearest["per_value"] < stochastic["per_value"] < 1000
    assert stochastic["registers"] <= 72 and nearest["registers"] <= 72  # fused.MAX_REGS_BY_BITS[8]
    assert stochastic["ops"]["FFMA"] > 0 and sum(stochastic["ops"].values()) > 100


def test_unknown_case_is_named() -> None:
    with pytest.raises(SystemExit, match="unknown case"):
        sass.main(["--cases", "r9/b9"])
