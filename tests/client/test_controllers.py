"""Heuristic controllers: decisions on hand-made telemetry windows."""

from __future__ import annotations

import itertools
import random

import pytest

from client.controllers import (
    DEFAULT_ENERGY_LADDER,
    HEURISTICS,
    AccordionController,
    Controller,
    EnergyAwareController,
    LoRAvenController,
    Schedule,
    ScheduleController,
    StaticController,
    make_controller,
)
from client.protocol import DEFAULT_GRID, CompressionSetting, Objective, TelemetryRecord

OBJ = Objective(memory_budget_bytes=None)
R8B8 = CompressionSetting(rank=8, bits=8, gamma=0.0)


def rec(step: int, **kw: object) -> TelemetryRecord:
    base: dict[str, object] = dict(
        step=step, loss=2.0, grad_norm=1.0, state_bytes=1000, interval_s=1.0, lr=1e-3, setting=R8B8
    )
    base.update(kw)
    return TelemetryRecord(**base)  # type: ignore[arg-type]


def test_registry_names_and_factory() -> None:
    assert set(HEURISTICS) == {"static", "accordion", "loraven", "energy_aware"}
    for name in HEURISTICS:
        c = make_controller(name)
        assert isinstance(c, Controller) and c.name == name
        s = c.decide([rec(50)], OBJ)
        DEFAULT_GRID.check(s)
        assert c.reason
    with pytest.raises(ValueError, match="known"):
        make_controller("nope")


def test_empty_history_is_a_clear_error() -> None:
    for name in HEURISTICS:
        if name == "static":
            continue
        with pytest.raises(ValueError, match="empty history"):
            make_controller(name).decide([], OBJ)


def test_schedule_parses_labels_and_plays_by_interval() -> None:
    sch = Schedule.parse(" r0/b8:1 > r0/b16/g0:2 >r0/b4 ")
    assert sch.label() == "r0/b8/g0:1>r0/b16/g0:2>r0/b4/g0" and Schedule.parse(sch.label()) == sch
    assert sch.first == CompressionSetting.parse("r0/b8/g0")
    played = [sch.at(i).label() for i in range(1, 6)]
    assert played == ["r0/b8/g0", "r0/b16/g0", "r0/b16/g0", "r0/b4/g0", "r0/b4/g0"]
    assert [s.label() for s in sch.settings()] == ["r0/b8/g0", "r0/b16/g0", "r0/b4/g0"]
    held = Schedule.parse("r64/b4")
    assert held == Schedule.of(CompressionSetting.parse("r64/b4/g0")) and held.label() == "r64/b4/g0"
    assert held.at(100) == held.first == held.final
    for bad, words in [
        ("r0/b8>r0/b4", "needs a count"),
        ("r0/b8:0>r0/b4", "needs a count"),
        ("r0/b8:1>r0/b4:3", "holds to the end"),
        ("r0/b9:1>r0/b4", "bits"),
    ]:
        with pytest.raises(ValueError, match=words):
            Schedule.parse(bad)
    with pytest.raises(ValueError, match="count from 1"):
        sch.at(0)


def test_schedule_controller_counts_intervals_by_step() -> None:
    c = ScheduleController("r0/b8/g0:2>r0/b4/g0")
    b8, b4 = CompressionSetting.parse("r0/b8/g0"), CompressionSetting.parse("r0/b4/g0")
    assert c.decide([rec(50)], OBJ) == b8  # after interval 1: interval 2 is still the opening
    assert c.decide([rec(50)], OBJ) == b8  # a retried request does not advance
    assert c.decide([rec(50), rec(100)], OBJ) == b4  # after interval 2: interval 3 on is r0/b4/g0
    assert "interval 3" in c.reason
    assert c.decide([rec(100), rec(150)], OBJ) == b4
    assert c.decide([rec(50)], OBJ) == b8  # the step went back: a new episode starts the schedule again


def test_static() -> None:
    s = CompressionSetting(rank=4, bits=2, gamma=0.5)
    assert StaticController(s).decide([rec(50)], OBJ) == s
    assert StaticController().decide([rec(50)], OBJ) == CompressionSetting(rank=0, bits=8, gamma=0.0)


class TestAccordion:
    low = CompressionSetting(rank=64, bits=16, gamma=0.0)
    high = CompressionSetting(rank=2, bits=4, gamma=0.0)

    def ctl(self) -> AccordionController:
        return AccordionController(threshold=0.25, low_compression=self.low, high_compression=self.high)

    def test_first_interval_is_critical(self) -> None:
        assert self.ctl().decide([rec(50)], OBJ) == self.low

    @pytest.mark.parametrize(
        ("g_old", "g_new", "critical"),
        [(1.0, 1.3, True), (1.0, 0.7, True), (2.0, 2.5, True), (1.0, 1.24, False), (1.0, 0.9, False),
         (0.0, 0.0, False), (0.0, 1.0, True)],
    )  # fmt: skip
    def test_threshold(self, g_old: float, g_new: float, critical: bool) -> None:
        c = self.ctl()
        s = c.decide([rec(50, grad_norm=g_old), rec(100, grad_norm=g_new)], OBJ)
        assert s == (self.low if critical else self.high)
        assert ("critical" in c.reason) == critical

    def test_only_last_two_records_matter(self) -> None:
        c = self.ctl()
        hist = [rec(50, grad_norm=10.0), rec(100, grad_norm=1.0), rec(150, grad_norm=1.05)]
        assert c.decide(hist, OBJ) == self.high

    def test_bad_threshold(self) -> None:
        with pytest.raises(ValueError, match="threshold"):
            AccordionController(threshold=0.0)


class TestLoRAven:
    def ctl(self, **kw: object) -> LoRAvenController:
        args: dict[str, object] = dict(target_error=0.1, hysteresis=0.2, cooldown_intervals=2)
        args.update(kw)
        return LoRAvenController(**args)  # type: ignore[arg-type]

    def test_up_down_hold(self) -> None:
        # band is (0.08, 0.12)
        assert self.ctl().decide([rec(50, compression_error=0.13)], OBJ).rank == 16
        assert self.ctl().decide([rec(50, compression_error=0.07)], OBJ).rank == 4
        assert self.ctl().decide([rec(50, compression_error=0.119)], OBJ).rank == 8
        assert self.ctl().decide([rec(50, compression_error=0.081)], OBJ).rank == 8

    def test_bits_and_gamma_fixed(self) -> None:
        s = self.ctl(bits=4, gamma=0.25).decide([rec(50, compression_error=0.5)], OBJ)
        assert s == CompressionSetting(rank=16, bits=4, gamma=0.25)

    def test_cooldown_sequence(self) -> None:
        c = self.ctl()
        hist: list[TelemetryRecord] = []
        ranks = []
        for i in range(10):  # error stays high: the rank climbs every cooldown + 1 intervals
            hist.append(rec(50 * (i + 1), compression_error=0.5))
            ranks.append(c.decide(hist[-8:], OBJ).rank)
        assert ranks == [16, 16, 16, 32, 32, 32, 64, 64, 64, 64]
        assert "ladder end" in c.reason

    def test_zero_cooldown_changes_every_interval(self) -> None:
        c = self.ctl(cooldown_intervals=0)
        ranks = [c.decide([rec(50 * (i + 1), compression_error=0.0)], OBJ).rank for i in range(5)]
        assert ranks == [4, 2, 1, 1, 1]

    def test_repeat_of_same_interval_does_not_advance(self) -> None:
        c = self.ctl()
        h = [rec(50, compression_error=0.5)]
        first = c.decide(h, OBJ)
        for _ in range(5):
            assert c.decide(h, OBJ) == first
        # still in cooldown at the next real interval
        assert c.decide([*h, rec(100, compression_error=0.5)], OBJ) == first
        assert "cooldown" in c.reason

    def test_new_episode_and_reset(self) -> None:
        c = self.ctl()
        c.decide([rec(500, compression_error=0.5)], OBJ)
        assert c.decide([rec(50, compression_error=0.5)], OBJ).rank == 16  # step went back: fresh start
        c.reset()
        assert c.decide([rec(100, compression_error=0.0)], OBJ).rank == 4

    def test_fresh_instance_takes_cooldown_from_the_window(self) -> None:
        r8, r16 = R8B8, CompressionSetting(rank=16, bits=8, gamma=0.0)

        def window(n_new: int) -> list[TelemetryRecord]:
            old = [rec(50, setting=r8, compression_error=0.5)]
            return old + [rec(50 * (i + 2), setting=r16, compression_error=0.5) for i in range(n_new)]

        # a change to r16 is visible n_new records back: cooldown 2 holds for 2 intervals
        assert [self.ctl().decide(window(n), OBJ).rank for n in (1, 2, 3, 4)] == [16, 16, 32, 32]
        c = self.ctl()
        c.decide(window(2), OBJ)
        assert "cooldown" in c.reason

    def test_start_level_off_ladder(self) -> None:
        off = CompressionSetting.off()
        assert self.ctl().decide([rec(50, setting=off, compression_error=0.1)], OBJ).rank == 64

    def test_deterministic_on_random_errors(self) -> None:
        rng = random.Random(0)
        errs = [rng.uniform(0.0, 0.3) for _ in range(40)]
        runs = []
        for _ in range(2):
            c = self.ctl()
            runs.append([c.decide([rec(50 * (i + 1), compression_error=e)], OBJ) for i, e in enumerate(errs)])
        assert runs[0] == runs[1]
        ranks = [s.rank for s in runs[0]]
        changes = [i for i in range(1, len(ranks)) if ranks[i] != ranks[i - 1]]
        assert all(b - a > 2 for a, b in itertools.pairwise(changes))

    @pytest.mark.parametrize(
        ("kw", "match"),
        [({"target_error": 0.0}, "target_error"), ({"hysteresis": 1.0}, "hysteresis"),
         ({"cooldown_intervals": -1}, "cooldown"), ({"ranks": [8, 4]}, "ascending"),
         ({"ranks": [5]}, "rank")],
    )  # fmt: skip
    def test_bad_args(self, kw: dict[str, object], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            self.ctl(**kw)


class TestEnergyAware:
    def ctl(self, **kw: object) -> EnergyAwareController:
        args: dict[str, object] = dict(budget_w=300.0, relax_fraction=0.8, window=1, cooldown_intervals=0)
        args.update(kw)
        return EnergyAwareController(**args)  # type: ignore[arg-type]

    def at(self, idx: int) -> CompressionSetting:
        return DEFAULT_ENERGY_LADDER[idx]

    def test_over_under_in_band(self) -> None:
        s0 = self.at(3)
        assert self.ctl().decide([rec(50, setting=s0, mean_power_w=350.0)], OBJ) == self.at(4)
        assert self.ctl().decide([rec(50, setting=s0, mean_power_w=200.0)], OBJ) == self.at(2)
        assert self.ctl().decide([rec(50, setting=s0, mean_power_w=260.0)], OBJ) == s0

    def test_power_from_energy_when_power_missing(self) -> None:
        r = rec(50, setting=self.at(3), energy_j=700.0, interval_s=2.0)  # 350 W
        assert self.ctl().decide([r], OBJ) == self.at(4)

    def test_no_energy_holds(self) -> None:
        c = self.ctl()
        assert c.decide([rec(50, setting=self.at(1))], OBJ) == self.at(1)
        assert "no energy" in c.reason

    def test_modelled_energy(self) -> None:
        r = rec(50, setting=self.at(3), mean_power_w=350.0, energy_source="modelled")
        c = self.ctl()
        assert c.decide([r], OBJ) == self.at(4)
        assert "modelled" in c.reason
        strict = self.ctl(use_modelled=False)
        assert strict.decide([r], OBJ) == self.at(3)
        assert "no measured energy" in strict.reason
        measured = rec(100, setting=self.at(3), mean_power_w=350.0, energy_source="nvml")
        assert self.ctl(use_modelled=False, window=2).decide([r, measured], OBJ) == self.at(4)

    def test_window_mean(self) -> None:
        h = [
            rec(50, setting=self.at(3), mean_power_w=500.0),
            rec(100, setting=self.at(3), mean_power_w=200.0),
        ]
        assert self.ctl(window=2).decide(h, OBJ) == self.at(4)  # mean 350 W
        assert self.ctl(window=1).decide(h, OBJ) == self.at(2)  # newest 200 W

    def test_walks_ladder_with_cooldown_and_stops_at_end(self) -> None:
        c = self.ctl(cooldown_intervals=1)
        out = [c.decide([rec(50 * (i + 1), setting=self.at(3), mean_power_w=999.0)], OBJ) for i in range(10)]
        idx = [DEFAULT_ENERGY_LADDER.index(s) for s in out]
        assert idx == [4, 4, 5, 5, 6, 6, 6, 6, 6, 6]

    def test_fresh_instance_takes_cooldown_from_the_window(self) -> None:
        h = [
            rec(50, setting=self.at(3), mean_power_w=999.0),
            rec(100, setting=self.at(4), mean_power_w=999.0),
        ]
        assert self.ctl(cooldown_intervals=1).decide(h, OBJ) == self.at(4)  # just changed: hold
        assert self.ctl(cooldown_intervals=0).decide(h, OBJ) == self.at(5)
        h.append(rec(150, setting=self.at(4), mean_power_w=999.0))
        assert self.ctl(cooldown_intervals=1).decide(h, OBJ) == self.at(5)

    def test_off_ladder_starts_at_start_index(self) -> None:
        s = CompressionSetting(rank=1, bits=3, gamma=1.0)
        assert self.ctl(start_index=2).decide([rec(50, setting=s, mean_power_w=250.0)], OBJ) == self.at(2)

    @pytest.mark.parametrize(
        ("kw", "match"),
        [({"budget_w": 0.0}, "budget_w"), ({"relax_fraction": 0.0}, "relax_fraction"),
         ({"ladder": []}, "ladder"), ({"start_index": 99}, "start_index"), ({"window": 0}, "window")],
    )  # fmt: skip
    def test_bad_args(self, kw: dict[str, object], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            self.ctl(**kw)
