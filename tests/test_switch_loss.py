"""benchmarks.switch_loss: schedules parse with clear errors, and a run with a change trains from the same
weights and batches as the static runs (the same seed gives the same loss until the change)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from benchmarks.switch_loss import Args, lr_at, parse_schedule, run, val_batches
from client.protocol import CompressionSetting
from envs.data import load_corpus


def test_schedules_parse_and_bad_ones_name_the_problem() -> None:
    assert parse_schedule("adamw") == (None, None)
    assert parse_schedule("r64/b4/g0") == (CompressionSetting.parse("r64/b4/g0"), None)
    a, b = parse_schedule("r0/b8/g0>r64/b8/g0")
    assert a == CompressionSetting.parse("r0/b8/g0") and b == CompressionSetting.parse("r64/b8/g0")
    with pytest.raises(ValueError, match="give A or A>B"):
        parse_schedule("r0/b8/g0>")
    with pytest.raises(ValueError, match="give A or A>B"):
        parse_schedule("r0/b8/g0>r8/b8/g0>r16/b8/g0")
    with pytest.raises(ValueError):
        parse_schedule("r0/b9/g0")


def test_a_change_after_the_last_step_is_the_static_run_and_a_change_before_it_is_not() -> None:
    corpus = load_corpus(max_bytes=200_000)
    args = Args(model="lm-tiny", steps=6, batch_size=2, seq_len=16, switch_at=3, val_batches=2)
    val, cpu = val_batches(args, corpus), torch.device("cpu")
    static = run(args, "r32/b4/g0", 0, corpus, val, cpu)
    late = run(replace(args, switch_at=99), "r32/b4/g0>r32/b8/g0", 0, corpus, val, cpu)
    switched = run(args, "r32/b4/g0>r32/b8/g0", 0, corpus, val, cpu)
    assert late == static  # same seed: same weights, batches and steps
    assert switched != static  # the change took effect


def test_the_warm_up_ramps_the_learning_rate_then_holds_it() -> None:
    args = Args(lr=1e-3, warmup_steps=4)
    assert [lr_at(args, s) for s in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert lr_at(Args(lr=1e-3), 0) == 1e-3  # no warm-up: constant from the first step
    corpus = load_corpus(max_bytes=200_000)
    short = Args(model="lm-tiny", steps=4, batch_size=2, seq_len=16, val_batches=2)
    val, cpu = val_batches(short, corpus), torch.device("cpu")
    warm = run(replace(short, warmup_steps=4), "r0/b8/g0", 0, corpus, val, cpu)
    assert warm != run(short, "r0/b8/g0", 0, corpus, val, cpu)  # the ramp reached the optimizer
