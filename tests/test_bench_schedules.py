"""`mango bench schedules`: open-loop schedules on the same surrogate episodes."""

from __future__ import annotations

import re

import pytest

from benchmarks.schedules import SchedulesArgs, main, play_schedule, report
from client.controllers import Schedule
from client.protocol import DEFAULT_GRID, CompressionSetting


def _row(table: str, label: str) -> list[float]:
    row = next(line for line in table.splitlines() if line.startswith(f"| {label} |"))
    return [float(x) for x in re.findall(r"[-+]?\d+\.\d+", row)]


def test_a_schedule_plays_its_settings_by_interval_and_pairs_with_the_first() -> None:
    args = SchedulesArgs(schedules=("r0/b8/g0", "r0/b8/g0:2>r0/b4/g0", "r0/b4/g0"), episodes=8)
    batch = play_schedule(Schedule.parse("r0/b8/g0:2>r0/b4/g0"), args)
    b8, b4 = (DEFAULT_GRID.action(CompressionSetting.parse(x)) for x in ("r0/b8/g0", "r0/b4/g0"))
    # the first interval opens the episode (not a decision); decision 1 sets interval 2, then r0/b4/g0
    assert tuple(batch.actions[0, 0]) == b8 and tuple(batch.actions[0, 1]) == b4
    table = report(args)
    held = _row(table, "r0/b8/g0")
    assert held[2] == 0.0 and held[3] == 0.0  # paired with itself
    moved = _row(table, "r0/b8/g0:2>r0/b4/g0")
    assert moved[-2] < held[-2]  # the 4-bit intervals hold less state on average
    assert moved[0] != held[0]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "give at least one"),
        (["r0/b8/g0:1"], "holds to the end"),
        (["r0/b8", "--episodes", "1"], "at least 2"),
    ],
)
def test_bad_input_names_the_problem(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert needle in capsys.readouterr().err
