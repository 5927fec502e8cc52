"""`mango bench gpu`'s convergence summary over seeds (the part needs CUDA; its arithmetic does not)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import benchmarks.gpu as gpu
from benchmarks.gpu import (
    VARIANTS,
    _keeps_variant,
    _relative_to_adamw,
    _switch_row,
    _write_converge,
    fused_knobs,
    host_ms,
    keeps_name,
    optimizer_filters,
    seed_summary,
)


def test_seed_summary_pairs_each_optimizer_over_its_seeds() -> None:
    rows = [
        {"optimizer": "torch AdamW (fused)", "seed": 0, "loss_vs_adamw": 1.0},
        {"optimizer": "MangoAdamW r0/b8/g0", "seed": 0, "loss_vs_adamw": 0.99},
        {"optimizer": "torch AdamW (fused)", "seed": 1, "loss_vs_adamw": 1.0},
        {"optimizer": "MangoAdamW r0/b8/g0", "seed": 1, "loss_vs_adamw": 1.01},
        {"optimizer": "MangoAdamW r0/b8/g0", "seed": 2, "loss_vs_adamw": 1.03},
        {"optimizer": "MangoAdamW r0/b4/g0", "seed": 0, "error": "RuntimeError: out of memory"},
        {"optimizer": "MangoAdamW r0/b4/g0", "seed": 1, "loss_vs_adamw": 1.2},
    ]
    out = {r["optimizer"]: r for r in seed_summary(rows, "loss_vs_adamw")}
    assert list(out) == ["torch AdamW (fused)", "MangoAdamW r0/b8/g0", "MangoAdamW r0/b4/g0"]
    mango = out["MangoAdamW r0/b8/g0"]
    assert mango["seed"] == "mean (3)"
    assert mango["loss_vs_adamw"] == pytest.approx(1.01)
    # Student t with 2 degrees of freedom (4.303) times the standard error (sd 0.02 over sqrt 3)
    assert mango["ci95"] == pytest.approx(4.303 * 0.02 / math.sqrt(3), rel=1e-3)
    assert out["torch AdamW (fused)"]["ci95"] == pytest.approx(0.0)
    assert out["MangoAdamW r0/b4/g0"]["seed"] == "mean (1)"  # the failed seed is left out
    assert math.isnan(out["MangoAdamW r0/b4/g0"]["ci95"])


def test_seed_summary_skips_an_optimizer_without_values() -> None:
    rows = [{"optimizer": "bnb AdamW8bit", "seed": 0, "error": "ImportError: bitsandbytes"}]
    assert seed_summary(rows, "loss_vs_adamw") == []


def test_converge_table_is_rewritten_with_each_run(tmp_path: Path) -> None:
    """The part rewrites ``converge.json`` after every run, so a call cut short keeps what ran: each seed's
    ratio to its own AdamW run, and the summary once two seeds hold a ratio. The seeds need not start at 0
    (``--first-seed``: a later call continues a cut part)."""
    rows = [
        {"optimizer": "torch AdamW (fused)", "seed": 3, "val_loss": 2.0},
        {"optimizer": "MangoAdamW r0/b8/g0", "seed": 3, "val_loss": 1.98},
        {"optimizer": "torch AdamW (fused)", "seed": 4, "val_loss": 1.9},
    ]
    _write_converge(tmp_path, rows, range(3, 5), {})
    first = json.loads((tmp_path / "converge.json").read_text())["rows"]
    assert [r.get("loss_vs_adamw") for r in first[:3]] == [1.0, pytest.approx(0.99), 1.0]
    assert "loss_vs_adamw" not in rows[1]  # the caller's rows are not changed
    rows.append({"optimizer": "MangoAdamW r0/b8/g0", "seed": 4, "val_loss": 1.919})
    _write_converge(tmp_path, rows, range(3, 5), {})
    summary = json.loads((tmp_path / "converge.json").read_text())["rows"][4:]
    mango = next(r for r in summary if r["optimizer"] == "MangoAdamW r0/b8/g0")
    assert mango["seed"] == "mean (2)" and mango["loss_vs_adamw"] == pytest.approx(1.0)
    assert "| MangoAdamW r0/b8/g0 | mean (2) |" in (tmp_path / "converge.md").read_text()


class _Counter:
    """A fake NVML counter (joules) that moves 0.5 J with every step."""

    def __init__(self) -> None:
        self.handle: object | None = object()
        self.j = 100.0

    def read_j(self) -> float | None:
        return self.j

    def temp_c(self) -> float | None:
        return 55.0 if self.handle is not None else None


def test_energy_row_divides_the_window_by_its_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The step and variants parts' energy columns: the counter's rise over the window per step, and the
    rise over the window's wall time as power; nothing without NVML or with a zero window."""
    monkeypatch.setattr(gpu, "_sync", lambda: None)
    counter = _Counter()

    def step() -> None:
        counter.j += 0.5

    row = gpu._energy_row(step, counter, 0.02)
    assert row["energy_mJ_per_step"] == pytest.approx(500.0)
    assert row["mean_power_W"] > 0.0
    assert gpu._energy_row(step, counter, 0.0) == {}
    counter.handle = None
    assert gpu._energy_row(step, counter, 0.02) == {}


def test_paired_energy_divides_by_the_adamw_window_just_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """The step part's paired column: the row's energy per step over the neighbouring AdamW window's (here
    0.5 J against 0.25 J a step: 2.0), with the temperature after it; without a pair only the row's own
    columns."""
    monkeypatch.setattr(gpu, "_sync", lambda: None)
    counter = _Counter()

    def step() -> None:
        counter.j += 0.5

    def adamw() -> None:
        counter.j += 0.25

    row: dict[str, object] = {}
    gpu._paired_energy_row(row, step, adamw, counter, 0.02)
    assert row["energy_vs_adamw_paired"] == pytest.approx(2.0)
    assert row["adamw_mJ_paired"] == pytest.approx(250.0) and row["temp_C"] == 55.0
    alone: dict[str, object] = {}
    gpu._paired_energy_row(alone, step, None, counter, 0.02)
    assert "energy_vs_adamw_paired" not in alone and alone["energy_mJ_per_step"] == pytest.approx(500.0)


def test_variant_rows_are_relative_to_the_adamw_row() -> None:
    """The variants part names its rows by ``setting``; the ratios find fused AdamW's row by that key."""
    rows = [
        {"setting": "torch AdamW (fused)", "variant": "", "energy_mJ_per_step": 600.0},
        {"setting": "r0/b2/g0", "variant": "DRAWS=hash", "energy_mJ_per_step": 540.0},
        {"setting": "r0/b2/g0", "variant": "", "error": "OutOfMemoryError"},
    ]
    _relative_to_adamw(rows, "energy_mJ_per_step", "energy_vs_adamw", name="setting")
    assert rows[1]["energy_vs_adamw"] == pytest.approx(0.9)
    assert "energy_vs_adamw" not in rows[2]


def test_variant_rows_are_kept_by_label_or_exactly() -> None:
    """``--optimizers`` in the variants part: a label's part keeps its every row; 'SETTING|VARIANT' keeps
    that row only ('SETTING|' the baseline)."""

    def kept(keep: list[str]) -> list[str]:
        rows = []
        for label, kw, knobs in VARIANTS:
            variant = ", ".join(f"{k}={v}" for k, v in {**kw, **knobs}.items())
            if _keeps_variant(keep, label, variant):
                rows.append(f"{label}|{variant}")
        return rows

    assert len(kept([])) == len(VARIANTS)
    assert len(kept(["r0/b2/g0"])) > 5
    assert kept(["r0/b2/g0|", "r0/b2/g0|DRAWS=hash", "r64/b8/g0|refresh_every=200"]) == [
        "r0/b2/g0|",
        "r64/b8/g0|refresh_every=200",
        "r0/b2/g0|DRAWS=hash",
    ]


def test_optimizer_filters_keep_a_two_knob_variant_whole() -> None:
    text = "AdamW (fused),r0/b8/g0|MATRIX_TILE=512, MAX_REGS=0,-nf4"
    keep = optimizer_filters(text)
    assert keep == ["AdamW (fused)", "r0/b8/g0|MATRIX_TILE=512, MAX_REGS=0", "-nf4"]
    rows = [
        f"{label}|" + ", ".join(f"{k}={v}" for k, v in {**kw, **knobs}.items())
        for label, kw, knobs in VARIANTS
    ]
    picked = [r for r in rows if _keeps_variant(keep[1:2], *r.split("|"))]
    assert picked == ["r0/b8/g0|MATRIX_TILE=512, MAX_REGS=0"]


def test_switch_row_takes_the_medians_and_keeps_the_slowest_first_step() -> None:
    """A change's row of the switch part from three timed passes: one pass's 70 ms first step (a host stall)
    shows in ``first_step_max_ms`` and not in the cost; the second step (it records the step graph) counts
    in the cost beyond a steady step."""
    reads = [
        {"apply": 20.0, "first": 7.0, "second": 2.0, "before": 1.3, "after": 1.1},
        {"apply": 26.0, "first": 70.0, "second": 3.0, "before": 1.9, "after": 1.2},
        {"apply": 21.0, "first": 8.0, "second": 2.5, "before": 1.5, "after": 1.0},
    ]
    row = _switch_row("r0/b32/g0 -> r16/b3/g0.75", reads, train_ms=27.0)
    assert (row["apply_ms"], row["first_step_ms"], row["step_ms_after"]) == (21.0, 8.0, 1.1)
    assert row["second_step_ms"] == 2.5
    assert row["first_step_max_ms"] == 70.0 and row["step_ms_before"] == 1.5 and row["passes"] == 3
    assert row["cost_in_steps"] == pytest.approx((21.0 + 8.0 + 2.5 - 2 * 1.1) / 1.1)
    assert row["cost_in_train_steps"] == pytest.approx((21.0 + 8.0 + 2.5 - 2 * 1.1) / 27.0)


def test_fused_knobs_are_put_back_when_the_block_raises() -> None:
    """A variants or tune-proj row that fails (a compile error, out of memory) leaves the fused module's
    knobs as they were for the next row."""
    from client.compression import fused

    before = (fused.PROJ_NORMS_MIN_RANK, fused.PROJ_STAGES)
    with (
        pytest.raises(RuntimeError, match="row failed"),
        fused_knobs({"PROJ_NORMS_MIN_RANK": 1 << 30, "PROJ_STAGES": 4}),
    ):
        assert (fused.PROJ_NORMS_MIN_RANK, fused.PROJ_STAGES) == (1 << 30, 4)
        raise RuntimeError("row failed")
    assert before == (fused.PROJ_NORMS_MIN_RANK, fused.PROJ_STAGES)


def test_exact_optimizer_filters_keep_one_row() -> None:
    """``--optimizers``: ``=NAME`` keeps that name only (a substring keeps its no-EF, unchecked and factored
    rows too, which ran session 42's 1B part out of its time), ``-STRING`` drops whatever else keeps."""
    names = [
        "torch AdamW (fused)",
        "MangoAdamW r0/b4/g0",
        "MangoAdamW r0/b4/g0 no-EF",
        "MangoAdamW r0/b4/g0 factored",
    ]
    exact = optimizer_filters("=torch AdamW (fused),=MangoAdamW r0/b4/g0")
    assert [n for n in names if keeps_name(exact, n)] == names[:2]
    assert [n for n in names if keeps_name(optimizer_filters("r0/b4/g0,-factored"), n)] == names[1:3]
    assert all(keeps_name([], n) for n in names)


def test_host_ms_is_the_median_window_per_call_each_from_an_idle_device() -> None:
    """Each window starts after a sync and is timed without one; the reading is the median window's time per
    call in ms (a slow window, a refresh's, does not move it)."""
    events: list[str] = []
    ticks = iter([0.0, 0.010, 1.0, 1.030, 2.0, 2.012])  # windows of 10, 30 and 12 ms over 2 calls each
    ms = host_ms(
        lambda: events.append("step"),
        n=2,
        windows=3,
        sync=lambda: events.append("sync"),
        clock=lambda: next(ticks),
    )
    assert ms == pytest.approx(6.0)  # the 12 ms window, per call
    assert events == ["sync", "step", "step"] * 3 + ["sync"]
