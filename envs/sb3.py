"""Stable-Baselines3 adapter: :class:`envs.surrogate.SurrogateVecEnv` as an SB3 ``VecEnv``.

SB3's algorithms take their own ``VecEnv`` type (list-of-dicts infos, ``terminal_observation``), not a
Gymnasium ``VectorEnv``; this adapter translates without copying observations and keeps the surrogate's
batched speed::

    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor
    from envs import SurrogateVecEnv
    from envs.sb3 import SB3VecEnvAdapter

    venv = VecMonitor(SB3VecEnvAdapter(SurrogateVecEnv(num_envs=16, split="train"), seed=0))
    model = PPO("MlpPolicy", venv, n_steps=128)  # or policy_kwargs={"features_extractor_class": ...}

Evaluate on held-out workloads with ``SurrogateVecEnv(split="heldout")`` (``envs.HELDOUT_WORKLOADS``).

Per-step ``infos[i]`` hold the raw reward terms (``loss_term``, ``memory_term``, ``energy_term``,
``time_term``) when ``info_terms=True`` (default), and ``terminal_observation`` /
``TimeLimit.truncated`` at episode ends (episodes *terminate* when the job ends, so ``TimeLimit.truncated`` is
always False and PPO does not bootstrap past the end of a job).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from envs.reward import TERM_NAMES
from envs.surrogate import SurrogateVecEnv

__all__ = ["SB3VecEnvAdapter"]


class SB3VecEnvAdapter(VecEnv):
    """Wrap a :class:`SurrogateVecEnv` (or any same-step-autoreset Gymnasium ``VectorEnv``) for SB3.

    :param venv: the vectorized environment.
    :param seed: seed of the first ``reset`` (sub-env ``i`` gets ``seed + i``); ``None``: unseeded.
    :param info_terms: copy the raw reward terms into every step's ``infos`` (cheap for tens of envs; set
        False for hundreds).
    """

    def __init__(self, venv: gym.vector.VectorEnv, seed: int | None = None, info_terms: bool = True) -> None:
        self.venv = venv
        self.info_terms = info_terms
        self._actions: np.ndarray | None = None
        self._first_seed = seed
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

    def reset(self) -> VecEnvObs:
        seeds = self._seeds
        seed: Any
        if all(s is None for s in seeds):
            seed, self._first_seed = self._first_seed, None
        elif all(s is not None for s in seeds):
            seed = [int(s) for s in seeds]  # type: ignore[arg-type]
        else:
            seed = int(next(s for s in seeds if s is not None))
        opts = self._options[0] if self._options and self._options[0] else None
        obs, _ = self.venv.reset(seed=seed, options=opts)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        assert self._actions is not None, "step_async() must come first"
        obs, reward, terminated, truncated, info = self.venv.step(self._actions)
        dones = np.logical_or(terminated, truncated)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if self.info_terms:
            cols = [(k, info[k]) for k in TERM_NAMES if k in info]
            for i, d in enumerate(infos):
                for k, v in cols:
                    d[k] = float(v[i])
        final = info.get("final_obs")
        for i in np.flatnonzero(dones):
            if final is not None and final[i] is not None:
                infos[i]["terminal_observation"] = final[i]
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return obs, reward.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    # -------------------------------------------------------------------------- attribute plumbing
    def _target(self) -> Any:
        return self.venv

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        n = len(list(self._get_indices(indices)))
        if attr_name == "render_mode":
            return [None] * n
        return [getattr(self._target(), attr_name)] * n

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self._target(), attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        n = len(list(self._get_indices(indices)))
        out = getattr(self._target(), method_name)(*method_args, **method_kwargs)
        return [out] * n

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False] * len(list(self._get_indices(indices)))

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None] * self.num_envs

    @property
    def surrogate(self) -> SurrogateVecEnv | None:
        """The wrapped surrogate env, if that is what it wraps."""
        return self.venv if isinstance(self.venv, SurrogateVecEnv) else None
