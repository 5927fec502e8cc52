"""``mango verdict``: the demo's verdict over the seeds of several demos' ``summary.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from demo import RunResult, objective_scores
from demo.pool import main, pool_summaries
from demo.report import format_seeds_verdict
from demo.runs import Point
from envs.objectives import preset

NAMES = ["adaptive (service)", "adamw (torch)", "static r0/b4/g0"]


def _runs(adaptive_loss: float, static_loss: float, adaptive_setting: str = "r0/b8/g0") -> list[RunResult]:
    def run(name: str, setting: str, loss: float, state: int) -> RunResult:
        pts = [Point(20 * (i + 1), loss, state, 1.0, 0.1, setting, 0, 8, 0.0) for i in range(3)]
        return RunResult(name, setting, loss, state, 100, 10.0, "nvml", 10.0, points=pts)

    return [
        run(NAMES[0], adaptive_setting, adaptive_loss, 120),
        run(NAMES[1], "adamw", 2.0, 800),
        run(NAMES[2], "r0/b4/g0", static_loss, 114),
    ]


def _summary(
    path: Path, seeds: dict[int, list[RunResult]], objective: str = "balanced", model: str = "gpt-85m"
) -> Path:
    obj = preset(objective)
    per = [
        {"seed": s, "runs": [r.as_dict() for r in rs], "objective_scores": objective_scores(rs, obj)}
        for s, rs in seeds.items()
    ]
    doc: dict[str, Any] = {
        "args": {"seed": min(seeds), "model": model, "steps": 600, "batch_size": 16},
        "objective": {"preset": objective},
        "runs": per[0]["runs"],
        "objective_scores": per[0]["objective_scores"],
    }
    if len(seeds) > 1:
        doc["seeds"] = per
    path.mkdir(parents=True, exist_ok=True)
    (path / "summary.json").write_text(json.dumps(doc))
    return path


def test_two_demos_pool_into_one_verdict_over_all_their_seeds(tmp_path: Path) -> None:
    seeds = {0: _runs(2.00, 2.04), 1: _runs(2.01, 2.03), 2: _runs(1.99, 2.05), 3: _runs(2.02, 2.02)}
    a = _summary(tmp_path / "a", {0: seeds[0], 1: seeds[1]})
    b = _summary(tmp_path / "b", {3: seeds[3], 2: seeds[2]})  # out of order: the table sorts by seed
    pooled = pool_summaries([a, b / "summary.json"])  # a folder or its summary.json
    table, verdict = pooled.table, pooled.verdict
    assert pooled.left_out == ()
    obj = preset("balanced")
    expected = format_seeds_verdict([objective_scores(seeds[s], obj) for s in range(4)], NAMES, "balanced")
    assert verdict == expected and verdict.startswith("verdict (balanced, 4 seeds):")
    assert [line.split(" |")[0] for line in table.splitlines()[2:]] == ["| 0", "| 1", "| 2", "| 3", "| mean"]
    # final losses against AdamW's 2.0: adaptive 0, +0.5, -0.5, +1 %; static +2, +1.5, +2.5, +1 %
    assert "adaptive (service) +0.25 % +/- 1.03" in pooled.loss_line
    assert "static r0/b4/g0 +1.75 % +/- 1.03" in pooled.loss_line and "adamw" not in pooled.loss_line


def test_one_seed_demos_pool_and_runs_that_trained_alike_tie(tmp_path: Path) -> None:
    a = _summary(tmp_path / "a", {0: _runs(2.0, 2.0, "r0/b4/g0")})  # played the static setting throughout
    b = _summary(tmp_path / "b", {1: _runs(2.0, 2.0, "r0/b4/g0")})
    verdict = pool_summaries([a, b]).verdict
    assert verdict.startswith("verdict (balanced, 2 seeds): a tie with the static run")


def test_demos_with_different_static_runs_pool_over_the_runs_they_share(tmp_path: Path) -> None:
    """A demo that also ran static r0/b8/g0 pools with one that did not: the verdict is over the adaptive
    run, AdamW and r0/b4/g0 of every seed, and the r0/b8/g0 runs are named as left out."""
    extra = RunResult("static r0/b8/g0", "r0/b8/g0", 1.5, 300, 100, 10.0, "nvml", 10.0)
    a = _summary(tmp_path / "a", {0: [*_runs(2.00, 2.04), extra], 1: [*_runs(2.01, 2.03), extra]})
    b = _summary(tmp_path / "b", {2: _runs(1.99, 2.05), 3: _runs(2.02, 2.02)})
    pooled = pool_summaries([a, b])
    obj = preset("balanced")
    plain = [_runs(2.00, 2.04), _runs(2.01, 2.03), _runs(1.99, 2.05), _runs(2.02, 2.02)]
    expected = format_seeds_verdict([objective_scores(r, obj) for r in plain], NAMES, "balanced")
    assert pooled.verdict == expected
    assert "r0/b8/g0" not in pooled.table
    assert pooled.left_out == (f"static r0/b8/g0 (in {a / 'summary.json'})",)


@pytest.mark.parametrize(
    ("second", "words"),
    [
        ({"seeds": {1: _runs(2.0, 2.0)}, "objective": "memory-first"}, "objective 'memory-first'"),
        ({"seeds": {1: _runs(2.0, 2.0)}, "model": "lm-medium"}, "pool demos of the same job"),
        ({"seeds": {0: _runs(2.0, 2.0)}}, "seed 0 is already in an earlier summary"),
        ({"seeds": {1: _runs(2.0, 2.0)[:2]}}, "share the adaptive run, AdamW and a static run"),
    ],
)
def test_summaries_that_do_not_pool_are_named(tmp_path: Path, second: dict[str, Any], words: str) -> None:
    a = _summary(tmp_path / "a", {0: _runs(2.0, 2.0)})
    b = _summary(tmp_path / "b", **second)
    with pytest.raises(ValueError, match=words) as info:
        pool_summaries([a, b])
    assert str(b / "summary.json") in str(info.value)


def test_the_command_prints_the_table_or_names_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _summary(tmp_path / "a", {0: _runs(2.0, 2.04), 1: _runs(2.0, 2.05)})
    assert main([str(a)]) == 0
    out = capsys.readouterr().out
    assert "| mean |" in out and "verdict (balanced, 2 seeds)" in out and "left out" not in out
    assert "final val loss vs AdamW (mean of 2 seeds, 95 % CI" in out
    assert main([str(tmp_path / "a" / "summary.json"), str(tmp_path / "missing.json")]) == 2
    assert "missing.json: cannot read a summary" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text(json.dumps({"runs": []}))
    assert main([str(tmp_path / "bad.json")]) == 2
    assert "bad.json: not a mango demo summary.json" in capsys.readouterr().err
    one = _summary(tmp_path / "one", {0: _runs(2.0, 2.0)})
    assert main([str(one)]) == 2
    assert "a pooled verdict needs at least two" in capsys.readouterr().err
