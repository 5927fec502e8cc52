"""The replay backend plays recorded traces back (nearest recorded setting)."""

from __future__ import annotations

import warnings

import numpy as np
from gymnasium.utils.env_checker import check_env as gym_check_env

from client.protocol import DEFAULT_GRID
from envs.env import CompressionEnv
from envs.traces import load_traces


def test_replay_checker_and_playback() -> None:
    ts = load_traces()
    name = next(iter(sorted(ts.workloads)))
    env = CompressionEnv(backend="replay", workload=name, objective="balanced")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gym_check_env(env, skip_render_check=True)
    _, info = env.reset(seed=0)
    eps = [e for e in ts.episodes_of(name) if e.seed == info["job_seed"]]
    followed = eps[info["replaying_index"]]
    assert followed.controller == info["replaying"]
    # asking for exactly what the followed episode did replays it record for record
    for t in range(1, followed.length):
        _, _, term, _, step_info = env.step(followed.actions()[t])
        assert step_info["setting_distance"] == 0.0
        assert env.history[-1].loss == followed.columns["loss"][t]
        assert term == (t == followed.length - 1)


def test_replay_nearest_setting() -> None:
    ts = load_traces()
    name = sorted(ts.workloads)[0]
    env = CompressionEnv(backend="replay", workload=name)
    env.reset(seed=1)
    a = np.array([0, 0, 4])  # rank 1, 2 bits, gamma 1: rarely recorded exactly
    _, _, _, _, info = env.step(a)
    played = env.history[-1].setting
    assert info["replayed_setting"] == played.label()
    assert DEFAULT_GRID.check(played) is None and info["setting_distance"] >= 0.0
