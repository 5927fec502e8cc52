"""Workload registry: the split, schedules, keys and configuration errors."""

from __future__ import annotations

import math

import pytest

from envs.workloads import (
    GPU_WORKLOADS,
    HELDOUT_WORKLOADS,
    TRAIN_WORKLOADS,
    VAL_WORKLOADS,
    WORKLOADS,
    Workload,
    get_workload,
    register_workload,
    schedule_lr,
    workloads_of,
)


def test_split_is_disjoint_and_differs() -> None:
    assert TRAIN_WORKLOADS and HELDOUT_WORKLOADS
    assert VAL_WORKLOADS and GPU_WORKLOADS
    splits = [set(TRAIN_WORKLOADS), set(VAL_WORKLOADS), set(HELDOUT_WORKLOADS), set(GPU_WORKLOADS)]
    assert sum(len(s) for s in splits) == len(set().union(*splits))  # pairwise disjoint
    assert set().union(*splits) == set(WORKLOADS)
    assert all(get_workload(n).device == "gpu" for n in GPU_WORKLOADS)
    train = [get_workload(n) for n in TRAIN_WORKLOADS + VAL_WORKLOADS]
    held = [get_workload(n) for n in HELDOUT_WORKLOADS]
    # no held-out workload repeats a training or validation (model, data, schedule, batch, noise) combination
    sig = {(w.model, w.model_overrides, w.data, w.schedule, w.batch_size, w.label_noise) for w in train}
    assert all(
        (w.model, w.model_overrides, w.data, w.schedule, w.batch_size, w.label_noise) not in sig for w in held
    )
    # held-out LM workloads train on the corpus's validation files: data never seen in training
    assert {w.data for w in held if w.task == "lm"} == {"stdlib-val"}
    assert {w.task for w in train} == {"lm", "digits"} and len(
        {w.model for w in train if w.task == "lm"}
    ) >= 2


def test_episode_shape_is_small() -> None:
    for w in WORKLOADS.values():
        assert 10 <= w.intervals <= 20 and 10 <= w.steps_per_interval <= 25, w.name
        assert w.planned_steps == w.steps_per_interval * (w.intervals + 1)


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_lr_schedule_positive_and_bounded(name: str) -> None:
    w = get_workload(name)
    lrs = [w.lr_at(s) for s in range(w.planned_steps)]
    assert all(0 < lr <= w.lr * (1 + 1e-12) and math.isfinite(lr) for lr in lrs)
    if w.schedule in ("cosine", "linear", "step"):
        assert lrs[-1] < lrs[w.warmup_steps]


def test_key_is_content_hash() -> None:
    w = get_workload(TRAIN_WORKLOADS[0])
    assert w.key() == w.with_overrides(description="other words").key()
    assert w.key() != w.with_overrides(lr=w.lr * 2).key()
    assert w.key() != w.with_overrides(steps_per_interval=w.steps_per_interval + 1).key()


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"steps_per_interval": 0}, "steps_per_interval"),
        ({"intervals": 0}, "intervals"),
        ({"schedule": "warmup-sqrt"}, "schedule"),
        ({"lr": -1.0}, "lr"),
        ({"split": "test"}, "split"),
        ({"seq_len": 0}, "seq_len"),
        ({"label_noise": 1.5}, "label_noise"),
    ],
)
def test_bad_workload_config(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        get_workload("lm-tiny-cosine").with_overrides(**kw)


def test_lookup_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown workload 'nope'.*known"):
        get_workload("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_workload(get_workload(TRAIN_WORKLOADS[0]))
    with pytest.raises(ValueError, match="split"):
        workloads_of("validation")
    w = get_workload(TRAIN_WORKLOADS[0])
    assert get_workload(w) is w and isinstance(w, Workload)


def test_one_schedule_function_serves_every_run() -> None:
    """``schedule_lr``: the warm-up ramp, then the named schedule; an unknown name is refused by name."""
    assert [schedule_lr(1.0, s, total=10, warmup_steps=4) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    end = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 9 / 10))  # the last step of 10, no warm-up
    assert schedule_lr(1.0, 9, total=10, schedule="cosine", floor=0.1) == pytest.approx(end)
    with pytest.raises(ValueError, match="'cyclic'"):
        schedule_lr(1.0, 3, total=10, schedule="cyclic")
