"""Behaviour cloning of the per-episode oracle: the labels are each episode's best static setting, and the
clone moves the policy's action heads towards them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.policies import ActorCriticPolicy

from agents.extractor import policy_kwargs
from agents.imitation import CloneAnchor, clone, oracle_dataset
from agents.rollout import grid_actions, run_surrogate
from agents.tinyformer import TinyFormerConfig
from agents.vec import JointActions
from client.protocol import DEFAULT_GRID, ObservationSpec
from envs.sb3 import SB3VecEnvAdapter
from envs.surrogate import SurrogateVecEnv


def test_each_label_is_the_best_static_setting_of_its_episode() -> None:
    obs, acts = oracle_dataset(["digits-mlp-cosine"], "default", (0.0, 0.0), episodes=2, seed=500, batch=1)
    k = len(acts) // 2
    assert len(obs) == len(acts) and k >= 2 and obs.dtype == np.float32
    # one label per episode, repeated over its intervals
    assert (acts[:k] == acts[0]).all() and (acts[k:] == acts[k]).all()
    # episode 0 (seed 500, its objective sampled as in training) played with every setting: the label is
    # the setting of the lowest J
    every = grid_actions()
    res = run_surrogate(lambda _o: every, ["digits-mlp-cosine"], None, [500] * len(every))
    assert tuple(every[int(res.objective.argmin())]) == tuple(acts[0])


def test_exploring_rollouts_keep_the_labels_but_hide_them_from_the_current_setting() -> None:
    args = (["digits-mlp-cosine", "gpu-gpt85m-cosine"], "default", (0.0, 0.0))
    obs0, acts0 = oracle_dataset(*args, episodes=4, seed=500, batch=2)
    obs, acts = oracle_dataset(*args, episodes=4, seed=500, batch=2, explore=0.5)
    assert obs.shape == obs0.shape and sorted(map(tuple, acts)) == sorted(map(tuple, acts0))
    spec = ObservationSpec()
    col = spec.TOKEN_FEATURES.index("rank_idx")
    current = spec.split(obs)[0][:, -1, col]  # the newest token's rank index, scaled to [0, 1]
    current0 = spec.split(obs0)[0][:, -1, col]
    # without exploring, every observation after an episode's first shows one rank per label;
    # with it, the same labels meet other current ranks
    assert len(np.unique(current)) > len(np.unique(current0))
    with pytest.raises(ValueError, match="probability in"):
        oracle_dataset(*args, episodes=1, seed=0, explore=1.5)


def test_clone_fits_the_heads_to_the_labels() -> None:
    torch.manual_seed(0)
    n_obs = 6
    policy = ActorCriticPolicy(
        spaces.Box(-1.0, 1.0, (n_obs,), np.float32),
        spaces.MultiDiscrete(list(DEFAULT_GRID.nvec)),
        lambda _: 1e-3,
    )
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(256, n_obs)).astype(np.float32)
    acts = np.where(obs[:, :1] > 0, [[6, 2, 0]], [[7, 3, 0]]).astype(np.int64)  # r64/b4 or r0/b8 by a feature
    losses = clone(policy, obs, acts, epochs=15, lr=1e-2, batch=64)
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():
        pred = policy.get_distribution(torch.as_tensor(obs)).mode().numpy()
    assert (pred == acts).all(axis=1).mean() > 0.9


def test_a_joint_head_learns_settings_the_factorized_heads_cannot() -> None:
    # Half the labels r64/b4, half r0/b8, with no feature telling them apart: factorized heads each take
    # their own majority; the joint head puts its mass on the two labelled settings only.
    torch.manual_seed(0)
    n_obs = 4
    policy = ActorCriticPolicy(
        spaces.Box(-1.0, 1.0, (n_obs,), np.float32), spaces.Discrete(DEFAULT_GRID.size), lambda _: 1e-3
    )
    obs = np.zeros((256, n_obs), np.float32)
    acts = np.array([[6, 2, 0], [7, 3, 0]] * 128, dtype=np.int64)
    clone(policy, obs, acts, epochs=30, lr=1e-2, batch=64)
    with torch.no_grad():
        p = policy.get_distribution(torch.as_tensor(obs[:1])).distribution.probs[0].numpy()
    labelled = DEFAULT_GRID.ravel([[6, 2, 0], [7, 3, 0]])
    assert p[labelled].sum() > 0.9
    assert tuple(DEFAULT_GRID.unravel(int(p.argmax()))) in {(6, 2, 0), (7, 3, 0)}


def test_the_anchor_pulls_ppo_towards_the_labels() -> None:
    venv = JointActions(SB3VecEnvAdapter(SurrogateVecEnv(num_envs=4, split="train"), seed=0))
    kw = policy_kwargs("tinyformer", TinyFormerConfig(d_model=16, n_heads=2, n_layers=1, joint=True))
    model = PPO(
        "MlpPolicy", venv, 3e-3, n_steps=8, batch_size=32, n_epochs=1, policy_kwargs=kw, device="cpu", seed=0
    )
    obs, acts = oracle_dataset(["digits-mlp-cosine"], "default", (0.0, 0.0), episodes=2, seed=500, batch=1)
    anchor = CloneAnchor(obs, acts, coef=5.0, steps=8, batch=16)
    model.learn(total_timesteps=32 * 12, callback=anchor)
    assert len(anchor.losses) >= 10
    assert anchor.losses[-1] < 0.5 * anchor.losses[0]


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        oracle_dataset(["digits-mlp-cosine"], "default", (0.0, 0.0), episodes=0, seed=0)
    with pytest.raises(ValueError, match="equal, non-zero"):
        clone(None, np.zeros((2, 3), np.float32), np.zeros((1, 3), np.int64))
    with pytest.raises(ValueError, match="coef > 0"):
        CloneAnchor(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.int64), coef=0.0)
