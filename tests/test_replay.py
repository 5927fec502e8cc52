"""`mango bench replay`: a recorded GPU run's service decisions, replayed for candidate policies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks.replay import ReplayArgs, load_seed_runs, main, replay_seed, report
from client.policy import load_policy
from client.protocol import CostProfile

#: Two seeds of the held-out GPU job (H100, session 24) played by s21L55, with the profiles the hook sent.
RUN = Path("results/gpu-2026-12-05-s24/call31-h100/demo-bal-wide100m-hind-s2")
PLAYED = "results/policy-s21L55"  # the policy that answered every decision of RUN
OTHER = "results/policy-s24L47"  # a candidate whose first decision differs there


def test_the_policy_that_played_reproduces_every_decision_of_its_run() -> None:
    seeds = load_seed_runs(RUN, stand_in=None)
    assert [s.seed for s in seeds] == [2, 3] and not any(s.profile_is_stand_in for s in seeds)
    policy = load_policy(PLAYED)
    for run in seeds:
        r = replay_seed(policy, run)
        assert r.decisions == len(run.answers) == 29
        assert r.replayed and r.first_miss is None and r.shielded == 0


def test_a_candidate_that_answers_differently_is_caught_at_its_first_window() -> None:
    run = load_seed_runs(RUN, stand_in=None)[0]
    r = replay_seed(load_policy(OTHER), run)
    assert not r.replayed
    assert r.first_miss == (1, "r0/b8/g0", "r0/b4/g0")


def test_a_one_seed_run_is_read_and_replayed() -> None:
    """A one-seed demo (the default) keeps its J at the top of ``summary.json`` and no ``seeds`` list (it was
    a ``KeyError``): the shipped policy on session 28's memory-first GPU run, which it played."""
    one = Path("results/gpu-2026-12-06-s28/call45-h100/demo-memory-first-gpt85m")
    (run,) = load_seed_runs(one, stand_in=None)
    summary = json.loads((one / "summary.json").read_text())
    assert run.seed == 0 and run.preset == "memory-first" and not run.profile_is_stand_in
    assert run.scores == summary["objective_scores"]
    r = replay_seed(load_policy(OTHER), run)
    assert r.decisions == len(run.answers) == 29 and r.replayed


def test_a_summary_without_demo_fields_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "summary.json").write_text(json.dumps({"objective": {"w_loss": 1.0}}))
    assert main([str(tmp_path)]) == 2
    assert "not a mango demo summary (KeyError" in capsys.readouterr().err


def test_the_table_gives_recorded_j_only_to_whole_replays() -> None:
    table = report(ReplayArgs(runs=(str(RUN),), policy=(f"played={PLAYED}", f"other={OTHER}")))
    summary = json.loads((RUN / "summary.json").read_text())
    j = summary["seeds"][0]["objective_scores"]["adaptive (service)"]
    row = next(line for line in table.splitlines() if line.startswith(f"| {RUN.name} | balanced | 2 |"))
    assert f"29/29, J {j:.3f}" in row and "w1: r0/b8/g0 -> r0/b4/g0" in row
    assert "| played | 58/58 (100%) | 2/2 |" in table
    assert "| other | 56/58 (97%) | 0/2 | - |" in table


def test_a_shielded_decision_is_counted(tmp_path: Path) -> None:
    d = tmp_path / RUN.name
    shutil.copytree(RUN, d)
    lines = (d / "decisions.jsonl").read_text().splitlines()
    rec = json.loads(lines[1])
    rec["shielded"] = True
    lines[1] = json.dumps(rec)
    (d / "decisions.jsonl").write_text("\n".join(lines) + "\n")
    r = replay_seed(load_policy(PLAYED), load_seed_runs(d, stand_in=None)[0])
    assert r.shielded == 1 and r.replayed


def test_a_run_with_a_fallback_decision_is_not_replayed_whole(tmp_path: Path) -> None:
    d = tmp_path / RUN.name
    shutil.copytree(RUN, d)
    lines = (d / "decisions.jsonl").read_text().splitlines()
    rec = json.loads(lines[5])
    rec["source"] = "fallback"  # the service was slow at this window: the hook's controller answered
    lines[5] = json.dumps(rec)
    (d / "decisions.jsonl").write_text("\n".join(lines) + "\n")
    run = load_seed_runs(d, stand_in=None)[0]
    r = replay_seed(load_policy(PLAYED), run)
    assert run.fallbacks == 1 and r.decisions == 28 and r.agree == 28 and not r.replayed


def test_a_run_without_its_profile_uses_the_stand_in(tmp_path: Path) -> None:
    d = tmp_path / RUN.name
    shutil.copytree(RUN, d)
    (d / "profile.json").unlink()
    stand_in = CostProfile.model_validate_json(Path("envs/profiles/h200-gpt85m.json").read_text())
    seeds = load_seed_runs(d, stand_in)
    assert seeds[0].profile_is_stand_in and seeds[0].profile == stand_in
    assert not seeds[1].profile_is_stand_in


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["/nonexistent-run"], "no summary.json"),
        ([str(RUN), "--policy", "s21L55"], "expected NAME=PATH"),
        ([], "give at least one"),
    ],
)
def test_bad_input_names_the_problem(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_a_missing_decisions_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / RUN.name
    shutil.copytree(RUN, d)
    (d / "decisions-3.jsonl").unlink()
    assert main([str(d)]) == 2
    assert "decisions-3.jsonl: missing (seed 3" in capsys.readouterr().err
