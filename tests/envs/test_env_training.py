"""The training backend: real model, real data, real MangoAdamW (tiny workloads, short episodes)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from client.protocol import TelemetryRecord
from envs.env import CompressionEnv
from envs.training import TrainingConfig, TrainingJob, reference_key, reference_run
from envs.workloads import get_workload


def _env(
    cache: Path, workload: str = "digits-mlp-cosine", clock: str = "modelled", **kw: object
) -> CompressionEnv:
    cfg = TrainingConfig(device="cpu", clock=clock, threads=1, cache_dir=str(cache))  # type: ignore[arg-type]
    return CompressionEnv(
        backend="training", workload=workload, interval_steps=2, intervals=3, training=cfg, job_seeds=2, **kw
    )  # type: ignore[arg-type]


def test_checkers_pass_on_training_backend(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", category=UserWarning)
        gym_check_env(_env(tmp_path), skip_render_check=True)
    sb3_check_env(_env(tmp_path), warn=True)


def _run(
    env: CompressionEnv, seed: int, actions: np.ndarray
) -> tuple[list[np.ndarray], list[float], list[TelemetryRecord]]:
    obs, _ = env.reset(seed=seed)
    obs_l, rew = [obs], []
    for a in actions:
        obs, r, term, _, _ = env.step(a)
        obs_l.append(obs)
        rew.append(r)
        if term:
            break
    return obs_l, rew, list(env.history)


@pytest.mark.parametrize("workload", ["digits-mlp-cosine", "lm-tiny-cosine"])
def test_same_seed_same_episode_on_cpu(tmp_path: Path, workload: str) -> None:
    acts = np.array([[2, 1, 2], [7, 3, 0], [0, 0, 4]])
    a = _run(_env(tmp_path, workload), 5, acts)
    b = _run(_env(tmp_path, workload), 5, acts)
    for x, y in zip(a[0], b[0], strict=True):
        np.testing.assert_array_equal(x, y)  # modelled clock: bit-identical episodes
    assert a[1] == b[1]
    # measured clock: the run itself (loss, gradients, state) is still identical; only times differ
    c = _run(_env(tmp_path, workload, clock="cpu"), 5, acts)
    assert [r.loss for r in c[2]] == [r.loss for r in a[2]]
    assert [r.state_bytes for r in c[2]] == [r.state_bytes for r in a[2]]
    assert [r.grad_norm for r in c[2]] == [r.grad_norm for r in a[2]]


def test_episode_telemetry_and_reward(tmp_path: Path) -> None:
    env = _env(tmp_path, objective="balanced")
    _, info = env.reset(seed=0, options={"job_seed": 1})
    assert info["job_seed"] == 1 and info["reference"]["dense_state_bytes"] > 0
    _, _, term, _, info = env.step(np.array([2, 1, 0]))  # r4 / 3 bits
    rec = env.history[-1]
    assert rec.setting.label() == "r4/b3/g0" and rec.energy_source == "modelled"
    assert rec.compression_error > 0 and 0 <= rec.spectral_tail <= 1
    assert info["memory_term"] < 0.5  # far below dense AdamW
    assert env.backend.last_timing["train_s"] > 0 and not term  # type: ignore[attr-defined]
    env.step(np.array([7, 5, 0]))
    _, _, term, _, info = env.step(np.array([7, 5, 0]))
    assert term and info["step"] == 8  # 4 intervals of 2 steps (warm-up included)


def test_reference_is_cached_on_disk(tmp_path: Path) -> None:
    w = get_workload("digits-mlp-cosine").with_overrides(steps_per_interval=2, intervals=2)
    cfg = TrainingConfig(device="cpu", clock="modelled", threads=1, cache_dir=str(tmp_path))
    run = reference_run(w, 0, cfg)
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and reference_key(w, 0, cfg) in files[0].name
    assert len(run.records) == 3 and all(r.setting.is_off for r in run.records)
    from envs import training

    training._MEMO.clear()
    again = reference_run(w, 0, cfg)  # from disk
    assert [r.loss for r in again.records] == [r.loss for r in run.records]
    # the uncompressed job reproduces its reference exactly (deterministic CPU)
    job = TrainingJob(w, 0, cfg)
    assert job.run_interval(run.records[0].setting).record.loss == run.records[0].loss
    assert reference_key(w, 1, cfg) != reference_key(w, 0, cfg)
    assert reference_key(w.with_overrides(lr=0.1), 0, cfg) != reference_key(w, 0, cfg)


def test_bad_training_config() -> None:
    with pytest.raises(ValueError, match="clock"):
        TrainingConfig(clock="sundial")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threads"):
        TrainingConfig(threads=0)
