"""`mango record` end to end on the cheapest workload (slow: real training)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import tyro

import envs.record as record_module
from envs.fit import FitConfig, fit_surrogate
from envs.record import (
    DEFAULT_CYCLE,
    RecordArgs,
    RecordConfig,
    config_from_args,
    main,
    parse_controllers,
    parse_setting,
    record,
)
from envs.traces import load_traces


def test_parse_setting() -> None:
    s = parse_setting("r8/b4/g0.25")
    assert (s.rank, s.bits, s.gamma) == (8, 4, 0.25)
    with pytest.raises(ValueError, match="like"):
        parse_setting("rank8")


@pytest.mark.slow
def test_record_then_fit(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "t.jsonl.gz"
    summary = record(
        RecordConfig(
            workloads=["digits-mlp-cosine"],
            seeds=[0],
            max_episodes=5,
            out=str(out),
            clock="modelled",
            budget_s=600,
        ),
        progress=False,
    )
    assert summary["episodes"] == 5
    ts = load_traces(out)
    assert ts.seeds_of("digits-mlp-cosine") == [0] and len(ts.episodes) == 5
    kinds = {e.controller.split(":")[0] for e in ts.episodes}
    assert {"random", "static", "pulse", "accordion"} <= kinds
    ep = ts.episodes[0]
    assert ep.length == 13 and len(ep.extra["rewards"]) == 12
    # the header names the widths rounded stochastically, so a later fit can tell today's 4 bits from older
    assert ep.meta["stochastic_bits"] == [2, 16]
    model, report = fit_surrogate(ts, FitConfig(fit_workloads=("digits-mlp-cosine",)))
    assert "digits-mlp-cosine" in model.tables and report


def test_main_rejects_bad_args(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown workload"):
        main(["--workloads", "nope", "--out", str(tmp_path / "x.jsonl.gz"), "--no-progress"])


def test_parse_controllers_takes_kinds_and_setting_labels() -> None:
    assert parse_controllers("r0/b4/g0, random,loraven,static:r32/b4/g0,pulse") == (
        "static:r0/b4/g0",
        "random",
        "loraven",
        "static:r32/b4/g0",
        "pulse",
    )
    with pytest.raises(ValueError, match="neither a controller kind"):
        parse_controllers("r0/b4/g0,magic")
    with pytest.raises(ValueError, match="setting label like"):  # rank 3 is not on the grid
        parse_controllers("r3/b4/g0")
    with pytest.raises(ValueError, match="empty"):
        parse_controllers(" , ")


def test_record_refuses_no_budget_and_unknown_kinds(tmp_path: Path) -> None:
    cfg = RecordConfig(workloads=["digits-mlp-cosine"], budget_s=None, out=str(tmp_path / "x.jsonl.gz"))
    with pytest.raises(ValueError, match="no budget"):
        record(cfg, progress=False)
    cfg = RecordConfig(workloads=["digits-mlp-cosine"], cycle=("randm",), out=str(tmp_path / "x.jsonl.gz"))
    with pytest.raises(ValueError, match="unknown controller kind"):
        record(cfg, progress=False)


def test_cli_wall_budget_alone_is_not_cpu_time() -> None:
    def cfg(*argv: str) -> RecordConfig:
        return config_from_args(tyro.cli(RecordArgs, args=list(argv)))

    wall = cfg("--max-wall-min", "2", "--controllers", "r0/b8/g0,random")
    assert (wall.budget_s, wall.max_wall_s) == (None, 120.0)
    assert wall.cycle == ("static:r0/b8/g0", "random")
    old = cfg()  # the old default: 12 CPU minutes, the wall cap 3x that
    assert (old.budget_s, old.max_wall_s, old.cycle) == (720.0, None, DEFAULT_CYCLE)
    both = cfg("--budget-min", "1", "--max-wall-min", "5")
    assert (both.budget_s, both.max_wall_s) == (60.0, 300.0)


@pytest.mark.slow
def test_record_chosen_controllers_on_a_wall_budget(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "c.jsonl.gz"
    cfg = RecordConfig(
        workloads=["digits-mlp-cosine"],
        seeds=[0],
        cycle=parse_controllers("r0/b4/g0,random,r32/b4/g0"),
        budget_s=None,
        max_wall_s=600.0,
        max_episodes=3,
        out=str(out),
        clock="modelled",
    )
    assert record(cfg, progress=False)["episodes"] == 3
    ts = load_traces(out)
    assert [e.controller for e in ts.episodes] == ["static:r0/b4/g0", "random", "static:r32/b4/g0"]
    ep = ts.episodes[0]
    assert set(ep.columns["rank"][1:].tolist()) == {0} and set(ep.columns["bits"][1:].tolist()) == {4}
    # a spent wall budget starts no episode
    cfg.max_wall_s, cfg.out = 0.0, str(tmp_path / "none.jsonl.gz")
    assert record(cfg, progress=False)["episodes"] == 0


def test_record_starts_no_episode_that_would_overrun_the_wall_budget(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recording under an outer timeout (a GPU call) must end between episodes, not be killed inside one:
    with a clock that makes every episode take the same ~N s, a budget of 1.5 episodes records one."""
    ticks = iter(range(10**6))
    monkeypatch.setattr(
        record_module,
        "time",
        SimpleNamespace(perf_counter=lambda: float(next(ticks)), process_time=time.process_time),
    )
    cfg = RecordConfig(
        workloads=["digits-mlp-cosine"],
        seeds=[0],
        cycle=("static",),
        budget_s=None,
        max_wall_s=1e9,
        max_episodes=1,
        out=str(tmp_path / "a.jsonl.gz"),
        clock="modelled",
    )
    record(cfg, progress=False)
    one = next(ticks)  # clock ticks an episode and its bookkeeping take
    ticks = iter(range(10**6))
    cfg.max_wall_s, cfg.max_episodes, cfg.out = 1.5 * one, None, str(tmp_path / "b.jsonl.gz")
    assert record(cfg, progress=False)["episodes"] == 1
    assert len(load_traces(tmp_path / "b.jsonl.gz").episodes) == 1
