"""``mango bench first``: a row per sample profile and preset, the agreement counted from those rows."""

from __future__ import annotations

import re

import pytest

from benchmarks.first_decision import main
from client.protocol import CompressionSetting
from envs.objectives import OBJECTIVE_PRESETS


def test_rows_and_their_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--profiles", "cpu-lm-tiny", "h200-gpt85m"]) == 0
    out = capsys.readouterr().out
    rows = [
        line.split(" | ")
        for line in out.splitlines()
        if line.startswith("| cpu") or line.startswith("| h200")
    ]
    assert len(rows) == 2 * len(OBJECTIVE_PRESETS)
    for row in rows:
        for label in row[3:6]:
            CompressionSetting.parse(label.strip(" |"))
    same = [sum(r[3] == r[k].strip(" |") for r in rows) for k in (4, 5)]
    m = re.search(r"assumed share (\d+) of (\d+) cells, share 1 (\d+) of", out)
    assert m is not None and [int(m.group(1)), int(m.group(3))] == same and int(m.group(2)) == len(rows)


def test_unknown_or_share_less_profile_is_refused() -> None:
    with pytest.raises(SystemExit, match="unknown profile"):
        main(["--profiles", "nope"])
    with pytest.raises(SystemExit, match="no measured training step"):
        main(["--profiles", "h200-modelled-target"])
