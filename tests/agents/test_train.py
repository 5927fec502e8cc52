"""``mango train``: the smoke run trains, evaluates, checkpoints and exports a servable artifact."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import tyro

from agents.train import TrainArgs
from client.policy import LearnedPolicy, load_artifact
from client.protocol import DEFAULT_GRID, CompressionSetting, Objective, TelemetryRecord
from tests.agents.conftest import SMOKE_ARGV


def test_smoke_run_writes_every_output(smoke_run: Path) -> None:
    for name in ("best_model.zip", "final_model.zip", "summary.json", "eval.jsonl", "policy/smoke-ppo.json"):
        assert (smoke_run / name).is_file(), name
    assert any((smoke_run / "tb").rglob("events.out.tfevents.*")), "no TensorBoard event file"
    evals = [json.loads(line) for line in (smoke_run / "eval.jsonl").read_text().splitlines()]
    assert [e["timesteps"] for e in evals] == [128, 256]
    assert set(evals[0]["presets"]) == {
        "loss-first",
        "memory-first",
        "energy-first",
        "time-first",
        "balanced",
    }


def test_selection_prefers_fewer_floor_failures_then_the_score(smoke_run: Path) -> None:
    evals = [json.loads(line) for line in (smoke_run / "eval.jsonl").read_text().splitlines()]
    for e in evals:  # one cell per validation workload and preset
        assert 0 <= e["floor_failures"] == sum(m["floor_failures"] for m in e["presets"].values()) <= 2 * 5
    best = min(evals, key=lambda e: (e["floor_failures"], -e["score"]))
    metrics = json.loads((smoke_run / "summary.json").read_text())["metrics"]
    assert metrics["floor_failures"] == best["floor_failures"]
    assert metrics["best_at_timesteps"] == best["timesteps"]


def test_manifest_records_the_command_config_and_metrics(smoke_run: Path) -> None:
    art = load_artifact(smoke_run / "policy")
    m = art.manifest
    assert m.training.command.startswith("mango train --total-timesteps 256 ")
    assert f"--out {smoke_run}" in m.training.command
    assert m.training.config["d_model"] == 16 and m.training.config["seed"] == 0
    assert art.config.d_model == 16 and art.config.n_layers == 1
    assert m.metrics["timesteps"] == 256
    assert set(m.metrics["heldout_surrogate"]) == {
        "loss-first",
        "memory-first",
        "energy-first",
        "time-first",
        "balanced",
    }
    assert m.version == "tinyformer-s0-256"


def test_exported_policy_decides_through_the_service_path(smoke_run: Path) -> None:
    policy = LearnedPolicy(load_artifact(smoke_run / "policy"))
    rec = TelemetryRecord(
        step=10,
        loss=2.0,
        grad_norm=1.0,
        state_bytes=1000,
        interval_s=0.5,
        lr=1e-3,
        setting=CompressionSetting.off(),
        energy_j=5.0,
    )
    setting = policy.decide([rec] * 3, Objective(w_loss=5, w_memory=0.5))
    DEFAULT_GRID.check(setting)


def test_args_dataclass_parses_cli_forms() -> None:
    a = tyro.cli(
        TrainArgs,
        args=[
            "--total-timesteps",
            "2e3",
            "--no-anneal-lr",
            "--extractor",
            "mlp",
            "--export-dir",
            "none",
            "--init-from",
            "x/y.json",
        ],
    )
    assert a.total_timesteps == 2000 and a.anneal_lr is False and a.extractor == "mlp"
    assert a.export_dir == "none" and a.init_from == "x/y.json"
    with pytest.raises(SystemExit):
        tyro.cli(TrainArgs, args=["--extractor", "cnn"])
    with pytest.raises(SystemExit):
        tyro.cli(TrainArgs, args=["--n-envs", "1.5"])


def test_every_training_argument_is_documented(capsys: pytest.CaptureFixture[str]) -> None:
    import dataclasses

    from agents.train import main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    # help lines wrap inside a box: compare the words without the box's lines
    text = " ".join(re.sub("[│╭╮╰╯─]", " ", capsys.readouterr().out).split())
    assert text.startswith("usage: mango train")
    # each field's docstring is its help text (its first words appear in --help)
    missing = [f.name for f in dataclasses.fields(TrainArgs) if f"--{f.name.replace('_', '-')}" not in text]
    assert not missing, f"TrainArgs fields missing from --help: {missing}"
    assert "episodes stepped side by side" in text  # n_envs's docstring


def test_bad_arguments_are_refused_with_the_fix() -> None:
    from agents.train import train

    with pytest.raises(ValueError, match="lower --batch"):
        train(TrainArgs(n_envs=2, n_steps=4, batch=64))
    with pytest.raises(ValueError, match="cannot initialize --extractor mlp"):
        train(TrainArgs(extractor="mlp", init_from="client/policy/default_policy"))
    with pytest.raises(ValueError, match="--prior-setting 'r3/b8/g0' is not a grid setting"):
        train(TrainArgs(prior_setting="r3/b8/g0"))
    with pytest.raises(ValueError, match="give one"):
        train(TrainArgs(prior_setting="r0/b8/g0", init_from="client/policy/default_policy"))
    with pytest.raises(ValueError, match=r"depth=\(0.5, 0.1\): give \(lo, hi\)"):
        train(TrainArgs(depth=(0.5, 0.1)))
    with pytest.raises(ValueError, match=r"--workloads \['lm-mid-linear'\] not in the training split"):
        train(TrainArgs(workloads=("lm-tiny-cosine", "lm-mid-linear")))  # a test-split workload
    with pytest.raises(ValueError, match="the training backend runs its split"):
        train(TrainArgs(backend="training", workloads=("lm-tiny-cosine",)))
    with pytest.raises(ValueError, match=r"--bc-lr -0\.1"):
        train(TrainArgs(bc_episodes=10, bc_lr=-0.1))
    with pytest.raises(ValueError, match="give --bc-episodes too"):
        train(TrainArgs(bc_anchor=1.0))


def test_objective_scaling_divides_by_the_episode_weight_sum() -> None:
    from stable_baselines3.common.vec_env import VecMonitor

    from agents.vec import ObjectiveScaledVecReward
    from envs.sb3 import SB3VecEnvAdapter
    from envs.surrogate import SurrogateVecEnv

    raw = SB3VecEnvAdapter(SurrogateVecEnv(num_envs=4, split="train"), seed=3)
    scaled = ObjectiveScaledVecReward(
        VecMonitor(SB3VecEnvAdapter(SurrogateVecEnv(num_envs=4, split="train"), seed=3))
    )
    raw.reset()
    scaled.reset()
    inner = scaled.venv.venv.venv  # the surrogate under the monitor and the adapter
    rng = np.random.default_rng(0)
    for _ in range(30):  # crosses episode ends (12 intervals): the scale must be the finished episode's
        a = np.stack([rng.integers(n, size=4) for n in DEFAULT_GRID.nvec], axis=1)
        w = inner.engine.weights.sum(axis=1).copy()
        r_raw = raw.step(a)[1]
        r_scaled = scaled.step(a)[1]
        np.testing.assert_allclose(r_scaled * w, r_raw, rtol=1e-5, atol=1e-6)


def test_profiles_restrict_the_hardware_draws() -> None:
    from agents.train import hardware_draws, make_surrogate_env

    assert hardware_draws(TrainArgs()) == "default"
    args = TrainArgs(profiles="cpu-dev-2core, h200-gpt85m", n_envs=4, norm_reward=False)
    assert hardware_draws(args).profiles == ("cpu-dev-2core", "h200-gpt85m")
    venv = make_surrogate_env(args)
    try:
        env = venv.venv.venv.venv  # ObjectiveScaledVecReward -> VecMonitor -> SB3 adapter -> SurrogateVecEnv
        assert env.engine.hw.names == ["cpu-dev-2core", "h200-gpt85m"]
    finally:
        venv.close()
    with pytest.raises(ValueError, match="unknown hardware profile"):
        make_surrogate_env(TrainArgs(profiles="no-such-gpu", n_envs=2))


def test_workloads_weight_the_draws_by_repeats() -> None:
    """``--workloads`` names the surrogate's training workloads; a name given twice is drawn twice as much."""
    from agents.train import make_surrogate_env

    names = ("lm-tiny-cosine", "gpu-gpt85m-cosine", "gpu-gpt85m-cosine")
    venv = make_surrogate_env(TrainArgs(workloads=names, n_envs=64, norm_reward=False))
    try:
        env = venv.venv.venv.venv
        assert env.workload_names == names
        drawn = []
        for seed in range(10):
            venv.seed(seed)
            venv.reset()
            drawn += [env.engine.names[i] for i in env.engine.w]
        share = drawn.count("gpu-gpt85m-cosine") / len(drawn)
        assert 0.6 < share < 0.73, share  # 2/3 of 640 draws (binomial sd 0.019)
    finally:
        venv.close()


def test_a_joint_head_clones_trains_exports_and_fine_tunes(tmp_path: Path) -> None:
    from agents.train import main

    first = tmp_path / "joint"
    argv = [*SMOKE_ARGV, "--eval-every", "0", "--joint-head", "--bc-episodes", "2", "--bc-epochs", "1"]
    assert main([*argv, "--bc-lr", "1e-3", "--out", str(first)]) == 0
    art = load_artifact(first / "policy")
    assert art.config.joint and art.weights["action_net.bias"].shape == (DEFAULT_GRID.size,)
    assert json.loads((first / "summary.json").read_text())["config"]["joint_head"] is True
    # the artifact's head decides the next run's action space (no --joint-head given)
    again = tmp_path / "again"
    argv = [*SMOKE_ARGV, "--eval-every", "0", "--init-from", str(first / "policy")]
    assert main([*argv, "--out", str(again)]) == 0
    assert load_artifact(again / "policy").config.joint
