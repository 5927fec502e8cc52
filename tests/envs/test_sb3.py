"""SurrogateVecEnv through the SB3 adapter: a few PPO updates run, infos carry what SB3 expects."""

from __future__ import annotations

import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecMonitor

from envs.fit import default_model
from envs.sb3 import SB3VecEnvAdapter
from envs.surrogate import SurrogateVecEnv


def test_ppo_runs_on_adapter() -> None:
    venv = VecMonitor(SB3VecEnvAdapter(SurrogateVecEnv(num_envs=4, model=default_model()), seed=0))
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, device="cpu", seed=0)
    model.learn(128)
    assert model.num_timesteps >= 128


def test_adapter_infos_and_seeding() -> None:
    m = default_model()
    a = SB3VecEnvAdapter(SurrogateVecEnv(num_envs=3, workload="digits-mlp-cosine", model=m), seed=5)
    b = SB3VecEnvAdapter(SurrogateVecEnv(num_envs=3, workload="digits-mlp-cosine", model=m), seed=5)
    np.testing.assert_array_equal(a.reset(), b.reset())
    done_seen = False
    for _ in range(20):
        acts = np.zeros((3, 3), dtype=np.int64)
        obs, rew, dones, infos = a.step(acts)
        assert rew.dtype == np.float32 and len(infos) == 3 and "memory_term" in infos[0]
        for i in np.flatnonzero(dones):
            done_seen = True
            assert infos[i]["terminal_observation"].shape == obs[i].shape
            assert infos[i]["TimeLimit.truncated"] is False
    assert done_seen
    a.seed(11)
    b.seed(11)
    np.testing.assert_array_equal(a.reset(), b.reset())
