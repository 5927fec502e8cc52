"""Wrappers for PPO on the compression environments (the SB3 adapter itself is :mod:`envs.sb3`).

:class:`JointActions` gives a policy with a joint action head (``TinyFormerConfig(joint=True)``) the
action space ``Discrete(prod(nvec))``: it picks one grid point, and the wrapper hands the environment that
point's ``(rank, bits, gamma)`` indices. :func:`to_grid_actions` does the same for a trained model's
``predict`` output.

Reward scaling:

:class:`ObjectiveScaledVecReward` (vectorized) and :class:`ObjectiveScaledReward` (one env) divide each
reward by the sum of the episode's objective weights. The scale of a return is then about the same for every
objective, which the critic needs: the observation carries the weights normalized to sum 1, so it cannot
tell ``w_loss=50`` from ``w_loss=0.5`` with the same ratios. A positive per-episode constant does not change
which actions are optimal within the episode (the fixed penalties of ``envs.reward`` aside: they become
relatively larger for objectives with small weights, which only makes divergence and budget violations more
strongly avoided).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from client.protocol import DEFAULT_GRID
from envs.sb3 import SB3VecEnvAdapter
from envs.surrogate import SurrogateVecEnv

__all__ = ["JointActions", "ObjectiveScaledReward", "ObjectiveScaledVecReward"]


class JointActions(VecEnvWrapper):
    """A grid ``MultiDiscrete(nvec)`` vec env as ``Discrete(prod(nvec))`` (flat, rank-major indices)."""

    def __init__(self, venv: VecEnv) -> None:
        nvec = tuple(int(n) for n in getattr(venv.action_space, "nvec", ()))
        if nvec != DEFAULT_GRID.nvec:
            want = list(DEFAULT_GRID.nvec)
            raise TypeError(f"JointActions wraps the grid's MultiDiscrete{want}; got {venv.action_space}")
        super().__init__(venv, action_space=gym.spaces.Discrete(DEFAULT_GRID.size))

    def reset(self) -> VecEnvObs:
        return self.venv.reset()

    def step_async(self, actions: np.ndarray) -> None:
        self.venv.step_async(DEFAULT_GRID.unravel(np.asarray(actions).reshape(-1)))

    def step_wait(self) -> VecEnvStepReturn:
        return self.venv.step_wait()


class ObjectiveScaledVecReward(VecEnvWrapper):
    """Divide rewards by the episode's objective weight sum (a wrapper stack over an
    :class:`envs.sb3.SB3VecEnvAdapter` of a :class:`envs.SurrogateVecEnv`)."""

    def __init__(self, venv: VecEnv) -> None:
        super().__init__(venv)
        inner: Any = venv
        while not isinstance(inner, SB3VecEnvAdapter):
            if not hasattr(inner, "venv"):
                raise TypeError("ObjectiveScaledVecReward needs an SB3VecEnvAdapter inside the wrapper stack")
            inner = inner.venv
        if not isinstance(inner.surrogate, SurrogateVecEnv):
            raise TypeError("ObjectiveScaledVecReward reads objective weights from a SurrogateVecEnv")
        self._surrogate = inner.surrogate
        self._scale = np.ones(venv.num_envs)

    def reset(self) -> VecEnvObs:
        return self.venv.reset()

    def step_async(self, actions: np.ndarray) -> None:
        # read before the step: a same-step autoreset replaces a finished episode's objective
        self._scale = self._surrogate.engine.weights.sum(axis=1).copy()
        self.venv.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        obs, reward, dones, infos = self.venv.step_wait()
        return obs, (reward / self._scale).astype(np.float32), dones, infos


class ObjectiveScaledReward(gym.Wrapper):
    """Single-env version of :class:`ObjectiveScaledVecReward` for :class:`envs.CompressionEnv`."""

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        objective = self.env.unwrapped.objective  # type: ignore[attr-defined]
        scale = float(objective.weights().sum())
        return obs, float(reward) / scale, terminated, truncated, info
