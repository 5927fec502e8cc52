"""``mango bench heads``: head probabilities that sum to one, and the policy's row equal to the static row of
the setting it holds."""

from __future__ import annotations

import re

import pytest

from benchmarks import heads
from client.policy.learned import DEFAULT_POLICY_DIR


def _run(capsys: pytest.CaptureFixture[str], *settings: str) -> str:
    heads.main(["--policy-dir", str(DEFAULT_POLICY_DIR), "--episodes", "2", "--settings", *settings])
    return capsys.readouterr().out


def test_heads_table_prints_probabilities_and_a_matching_static_row(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = _run(capsys, "r0/b8/g0")
    ranks = re.search(r"rank head at interval 3: (.*)", out)
    assert ranks is not None
    probs = [float(x.split(": ")[1]) for x in ranks.group(1).split(", ")]
    assert len(probs) == 8 and abs(sum(probs) - 1.0) < 0.01
    played = re.search(r"greedy settings of the first episode: (.*)", out)
    assert played is not None
    last = played.group(1).split()[-1]
    # the policy's last setting, played statically: the table has both rows, and where the policy held that
    # setting from the second interval on (the first is the environment's first decision in both runs) they
    # are one run
    out = _run(capsys, last)
    rows = dict(re.findall(r"^\| (policy|static \S+) \| ([0-9.]+) \|", out, re.M))
    assert set(rows) == {"policy", f"static {last}"}
    assert (rows["policy"] == rows[f"static {last}"]) == (set(played.group(1).split()) == {last})
