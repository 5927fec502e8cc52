"""``mango bench sim2real``: parsing a real H200 demo log and replaying its settings through the surrogate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.sim_to_real import SimToRealArgs, load_runs, parse_demo_log, report, simulate
from envs.fit import default_model

ROOT = Path(__file__).resolve().parents[1]
LOG = ROOT / "results" / "gpu-h200-2026-12-03-s6" / "policy-check" / "demo-cand-gpt-bal.log"


def test_parse_a_real_demo_log() -> None:
    (log,) = parse_demo_log(LOG)
    assert log.model == "gpt-85m"
    assert set(log.runs) == {"adaptive (service)", "adamw (torch)", "static r0/b8/g0"}
    for rows in log.runs.values():
        assert [s for s, _, _ in rows] == list(range(20, 601, 20))  # 30 intervals of 20 steps
    assert log.runs["adamw (torch)"][0] == (20, "adamw", 3.837)
    assert log.runs["adaptive (service)"][1][1] == "r64/b8/g0.5"


def test_a_log_of_several_seeds_gives_one_log_per_seed(tmp_path: Path) -> None:
    header, *body = LOG.read_text().splitlines(keepends=True)
    runs = [line for line in body if line.lstrip().startswith("[")]
    two = tmp_path / "seeds.log"  # the layout `mango demo --seeds 2 --no-progress` prints
    two.write_text(header + "seed 4 (1 of 2)\n" + "".join(runs) + "seed 5 (2 of 2)\n" + "".join(runs))
    a, b = parse_demo_log(two)
    assert set(a.runs) == {"adamw (torch)", "adaptive (service) (seed 4)", "static r0/b8/g0 (seed 4)"}
    assert set(b.runs) == {"adamw (torch)", "adaptive (service) (seed 5)", "static r0/b8/g0 (seed 5)"}
    assert a.runs["adamw (torch)"] == b.runs["adamw (torch)"] and len(a.runs["adamw (torch)"]) == 30


def test_a_file_without_a_demo_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "x.log"
    bad.write_text("pytest output\n")
    with pytest.raises(ValueError, match="not a demo log"):
        parse_demo_log(bad)


def test_simulate_charges_projection_and_not_the_identity() -> None:
    model = default_model()
    wl = "gpu-gpt85m-cosine"
    ident = simulate(model, wl, ["r0/b32/g0"] * 12)
    proj = simulate(model, wl, ["r0/b8/g0"] + ["r4/b8/g0"] * 11)
    np.testing.assert_allclose(ident, 0.0, atol=1e-12)  # the reference run has no excess
    assert proj[-1] > 0.05 and np.all(np.diff(proj[1:]) > -0.02)  # rank 4 costs loss, and it persists


def test_report_measures_y_against_the_adamw_run(tmp_path: Path) -> None:
    text = report(SimToRealArgs(logs=(str(LOG),), per_setting=True))
    (log,) = parse_demo_log(LOG)
    ref = log.runs["adamw (torch)"]
    static = log.runs["static r0/b8/g0"]
    y_final = (static[-1][2] - ref[-1][2]) / ref[0][2]
    row = next(line for line in text.splitlines() if "| static r0/b8/g0 |" in line)
    assert f"{y_final:+.4f}" in row  # the measured final loss term, from the two runs' last intervals
    assert "| gpt-85m | r0/b8/g0 |" in text  # the per-setting table
    other = tmp_path / "cpu.log"  # the same runs under a model with no recorded stand-in
    other.write_text(LOG.read_text().replace("MANGO demo: gpt-85m,", "MANGO demo: lm-tiny,"))
    with pytest.raises(ValueError, match="no stand-in workload for model 'lm-tiny'"):
        report(SimToRealArgs(logs=(str(other),)))


LM_JSON = ROOT / "results" / "lm-20261204-014844.json"  # mango bench lm, lm-small, lr 1e-3, seeds 0-2


def test_bench_lm_json_gives_one_log_per_seed() -> None:
    logs = load_runs(LM_JSON)
    assert [lg.model for lg in logs] == ["lm-small"] * 3
    runs = logs[1].runs
    assert set(runs) == {
        "adamw (torch)",
        "static r0/b8/g0 (seed 1)",
        "static r64/b8/g0.25 (seed 1)",
        "static r32/b4/g0.25 (seed 1)",
        "static r16/b8/g0 (seed 1)",
    }
    assert [s for s, _, _ in runs["adamw (torch)"]] == list(
        range(20, 301, 20)
    )  # 300 steps, 20-step intervals
    assert {lab for _, lab, _ in runs["static r16/b8/g0 (seed 1)"]} == {"r16/b8/g0"}
    text = report(SimToRealArgs(logs=(str(LM_JSON),), map=("lm-small=lm-small-constant",)))
    assert "| lm-small | 12 |" in text  # 4 compressed settings x 3 seeds, each against its own seed's AdamW


def test_a_bench_lm_json_without_curves_is_refused(tmp_path: Path) -> None:
    old = tmp_path / "lm-old.json"
    old.write_text('{"config": {"model": "lm-small"}, "rows": [{"setting": "adamw", "val_loss": 2.3}]}')
    with pytest.raises(ValueError, match="no per-interval train losses"):
        load_runs(old)
