"""`mango record` end to end on the cheapest workload (slow: real training)."""

from __future__ import annotations

from pathlib import Path

import pytest

from envs.fit import FitConfig, fit_surrogate
from envs.record import RecordConfig, main, parse_setting, record
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
    model, report = fit_surrogate(ts, FitConfig(fit_workloads=("digits-mlp-cosine",)))
    assert "digits-mlp-cosine" in model.tables and report


def test_main_rejects_bad_args(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown workload"):
        main(["--workloads", "nope", "--out", str(tmp_path / "x.jsonl.gz"), "--no-progress"])
