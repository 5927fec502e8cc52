"""``mango bench step-share``: the hook's observed-step rule on recorded demo runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks.step_share import StepShareArgs, least_estimate, main, report
from client.protocol import CostProfile

#: A recorded H100 demo run (session 26, call 38: gpt-85m, one seed) with the profile its hook sent.
RUN = Path("results/gpu-2026-12-05-s26/call38-h100/r/demo-bal-gpt85m-s24L47-s0")


def test_a_recorded_gpu_run_keeps_its_step_and_a_stale_one_is_replaced(tmp_path: Path) -> None:
    prof = CostProfile.model_validate_json((RUN / "profile.json").read_text())
    least = least_estimate(RUN / "telemetry.jsonl", prof)
    assert least is not None and prof.train_step_s is not None
    assert prof.train_step_s < least < 1.25 * prof.train_step_s
    table = report(StepShareArgs(runs=(str(RUN),)))
    assert table.count("| no |") == 1 and "| yes |" not in table
    # the same run, as if the profile had been timed on a step a third as long (a stale cache)
    stale = tmp_path / "stale"
    stale.mkdir()
    shutil.copy(RUN / "telemetry.jsonl", stale / "telemetry.jsonl")
    short = prof.model_copy(update={"train_step_s": prof.train_step_s / 3})
    (stale / "profile.json").write_text(short.model_dump_json())
    table = report(StepShareArgs(runs=(str(stale),)))
    assert "| yes |" in table and f"{least * 1e3:.2f}" in table


def test_the_command_names_a_folder_without_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 2
    assert "no run with a telemetry log" in capsys.readouterr().err
    assert main([str(RUN)]) == 0 and "| fires |" in capsys.readouterr().out
