"""`mango bench obs-shift`: a real run's telemetry tokens beside the surrogate's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks.obs_shift import ObsShiftArgs, demo_observations, main, report, setting_probabilities
from client.compression.sizes import DENSE_BYTES_PER_PARAM
from client.policy import load_default_policy
from client.protocol import CompressionSetting, CostProfile, ObservationSpec
from envs.hardware import PROFILE_DIR
from envs.objectives import preset
from envs.traces import load_traces


def _outside(table: str, feature: str) -> float:
    row = next(line for line in table.splitlines() if line.startswith(f"| {feature} |"))
    return float(re.findall(r"(\d+)%", row)[-1]) / 100


def _write(path: Path, recs: list) -> None:
    path.write_text("".join(r.model_dump_json() + "\n" for r in recs))


def test_recorded_telemetry_sits_inside_and_a_shifted_copy_outside(tmp_path: Path) -> None:
    ts = load_traces()
    ep = next(e for e in ts.episodes if e.workload == "lm-tiny-cosine")
    recs = ep.records()
    _write(tmp_path / "real.jsonl", recs)
    args = ObsShiftArgs(telemetry=(str(tmp_path / "real.jsonl"),), workload="lm-tiny-cosine",
                        hardware="cpu-dev-2core", episodes=16)  # fmt: skip
    table = report(args)
    assert "log_grad_norm" in table and "| rank_idx |" not in table
    # a recorded episode of the surrogate's own workload: its gradient norms are the surrogate's
    assert _outside(table, "log_grad_norm") <= 0.25
    # the same run with gradients 1000x larger (a different model's scale) is flagged at every interval
    _write(tmp_path / "big.jsonl", [r.model_copy(update={"grad_norm": r.grad_norm * 1000}) for r in recs])
    shifted = report(ObsShiftArgs(telemetry=(str(tmp_path / "big.jsonl"),), workload="lm-tiny-cosine",
                                  hardware="cpu-dev-2core", episodes=16))  # fmt: skip
    assert _outside(shifted, "log_grad_norm") == 1.0
    assert _outside(shifted, "loss_win") == _outside(table, "loss_win")


def test_clipping_a_feature_already_in_range_changes_no_decision(tmp_path: Path) -> None:
    ts = load_traces()
    ep = next(e for e in ts.episodes if e.workload == "lm-tiny-cosine")
    _write(tmp_path / "real.jsonl", ep.records())
    table = report(ObsShiftArgs(telemetry=(str(tmp_path / "real.jsonl"),), workload="lm-tiny-cosine",
                                hardware="cpu-dev-2core", episodes=16, policy="default"))  # fmt: skip
    assert "greedy decisions on 13 demo windows" in table
    in_range = [
        f for f in ("loss_std_win", "log_grad_norm", "kurtosis", "memory_rel") if _outside(table, f) == 0
    ]
    assert in_range  # the recorded episode of the surrogate's own workload sits inside for some features
    for f in in_range:  # the last row naming the feature is the decision table's
        clipped = [line for line in table.splitlines() if line.startswith(f"| {f} |")][-1]
        assert clipped.endswith("| 0% |"), clipped


def test_own_median_sets_every_feature_the_setting_included(tmp_path: Path) -> None:
    ts = load_traces()
    ep = next(e for e in ts.episodes if e.workload == "lm-tiny-cosine")
    setting = CompressionSetting(rank=1, bits=2, gamma=0.0)  # the grid's first rank: rank_idx 0
    _write(tmp_path / "r1.jsonl", [r.model_copy(update={"setting": setting}) for r in ep.records()])
    table = report(ObsShiftArgs(telemetry=(str(tmp_path / "r1.jsonl"),), workload="lm-tiny-cosine",
                                hardware="cpu-lm-tiny", episodes=4, policy="default", own_median=True,
                                depth=(0.0, 0.0)))  # fmt: skip
    own = table.split("own surrogate episodes")[1]
    rows = [line for line in own.splitlines() if line.startswith("| ") and "---" not in line][1:]
    names = [r.split(" | ")[0][2:] for r in rows]
    assert names == [f for f in ObservationSpec.TOKEN_FEATURES if f != "mask"]
    rank_row = rows[names.index("rank_idx")].split(" | ")
    assert float(rank_row[1]) == 0.0 and rank_row[3].endswith("% |")


def test_the_windows_carry_the_jobs_profile_and_a_surrogate_one_is_swapped_in(tmp_path: Path) -> None:
    """``--profile``: the windows carry the job's cost profile as the service's did (none, which no training
    episode has, without it); the last decision row swaps in a surrogate episode's job features."""
    ts = load_traces()
    ep = next(e for e in ts.episodes if e.workload == "lm-tiny-cosine")
    _write(tmp_path / "real.jsonl", ep.records())
    path = PROFILE_DIR / "cpu-lm-tiny.json"
    spec = ObservationSpec()
    with_profile = demo_observations([str(tmp_path / "real.jsonl")], spec, preset("balanced"),
                                     CostProfile.model_validate_json(path.read_text()))  # fmt: skip
    bare = demo_observations([str(tmp_path / "real.jsonl")], spec, preset("balanced"))
    job_with, job_bare = spec.split(with_profile)[1], spec.split(bare)[1]
    assert (job_with != job_bare).any(axis=1).all()  # every window's job features hold the profile
    # the reference's AdamW state comes from the profile's parameter count, as the hook's does (not from
    # the first record, which a run that opened compressed would make far too small)
    recs, prof = ep.records(), CostProfile.model_validate_json(path.read_text())
    recs[0] = recs[0].model_copy(update={"state_bytes": 1000})  # a run that opened at a tiny state
    _write(tmp_path / "opened.jsonl", recs)
    obs = demo_observations([str(tmp_path / "opened.jsonl")], spec, preset("balanced"), prof)
    newest = spec.split(obs)[0][:, -1, spec.TOKEN_FEATURES.index("memory_rel")]
    expected = [r.state_bytes / (DENSE_BYTES_PER_PARAM * prof.n_params) for r in recs]
    assert newest == pytest.approx(expected, rel=1e-6)
    table = report(ObsShiftArgs(telemetry=(str(tmp_path / "real.jsonl"),), workload="lm-tiny-cosine",
                                hardware="cpu-lm-tiny", episodes=4, policy="default",
                                profile=str(path)))  # fmt: skip
    row = table.splitlines()[-1]
    assert row.startswith("| job features (objective, profile) of a surrogate episode |")
    assert row.endswith("% |")


def test_empty_input_is_refused_with_the_file_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([]) == 2
    (tmp_path / "t.jsonl").write_text("")
    capsys.readouterr()
    assert main([str(tmp_path / "t.jsonl"), "--workload", "lm-tiny-cosine", "--episodes", "1"]) == 2
    assert (
        "mango bench obs-shift: " in (err := capsys.readouterr().err)
        and "t.jsonl: no telemetry records" in err
    )


def test_setting_probabilities_cover_the_grid_and_peak_at_the_greedy_choice(tmp_path: Path) -> None:
    """``--probs``: over the whole grid a window's probabilities sum to 1 and the greedy setting has the
    largest; the table prints one row per window; without ``--policy`` the command refuses."""
    ts = load_traces()
    ep = next(e for e in ts.episodes if e.workload == "lm-tiny-cosine")
    _write(tmp_path / "real.jsonl", ep.records())
    policy = load_default_policy()
    obs = demo_observations([str(tmp_path / "real.jsonl")], ObservationSpec(), preset("balanced"))
    grid = policy.grid
    every = [
        CompressionSetting(rank=r, bits=b, gamma=g)
        for r in grid.ranks
        for b in grid.bits
        for g in grid.gammas
    ]
    p = setting_probabilities(policy, obs, every)
    assert p.shape == (len(obs), len(every)) and (p >= 0).all()
    assert abs(p.sum(axis=1) - 1).max() < 1e-6
    for i, o in enumerate(obs):
        assert every[int(p[i].argmax())] == policy.decide_obs(o)
    with pytest.raises(ValueError, match=r"gamma=0\.3 is not on grid"):
        setting_probabilities(policy, obs, [CompressionSetting(rank=0, bits=8, gamma=0.3)])
    table = report(ObsShiftArgs(telemetry=(str(tmp_path / "real.jsonl"),), workload="lm-tiny-cosine",
                                hardware="cpu-dev-2core", episodes=4, policy="default",
                                probs="r0/b4/g0,r0/b8/g0"))  # fmt: skip
    rows = [line for line in table.split("probability of each setting")[1].splitlines() if line[:3] == "| 1"]
    assert rows and len(rows[0].split(" | ")) == 4
    assert main([str(tmp_path / "real.jsonl"), "--probs", "r0/b4/g0"]) == 2
