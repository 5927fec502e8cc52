"""`python -m benchmarks.switch_cpu`'s op count: what a setting change dispatches, per tensor or batched."""

from __future__ import annotations

import pytest
import torch

from benchmarks.switch_cpu import SwitchCpuArgs, _apply, main


def _params() -> list[torch.nn.Parameter]:
    """Six matrices of one shape and two of another, with gradients: two batch groups."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(96, 64)] * 6 + [(64, 160)] * 2
    params = [torch.nn.Parameter(torch.randn(s, generator=gen) * 0.02) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    return params


@pytest.mark.parametrize(("a", "b"), [("r0/b8/g0", "r4/b8/g0"), ("r4/b8/g0", "r0/b4/g0")])
def test_batched_conversion_dispatches_fewer_ops(a: str, b: str) -> None:
    params = _params()
    ms_each, each = _apply(params, a, b, batched=False)
    ms_both, both = _apply(params, a, b, batched=True)
    assert ms_each > 0 and ms_both > 0
    assert 0 < each.quant < each.total and 0 < both.quant < both.total  # the states are re-quantized
    assert both.total < each.total  # the basis changes and decodes run once per group, not per tensor
    assert both.quant < each.quant / 2  # each state kind of a group re-quantized in one call
    assert "view" not in each.by_op and "transpose" not in each.by_op  # views launch nothing: not counted


def test_bad_reps_is_refused() -> None:
    with pytest.raises(ValueError, match="--reps 0"):
        main(["--reps", "0"])
    assert SwitchCpuArgs().model == "gpt2"
