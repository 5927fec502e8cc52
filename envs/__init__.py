"""Offline environment for learning compression control (see docs/architecture.md, "envs").

Importing the package registers the Gymnasium id ``mango/CompressionControl-v0``::

    import gymnasium as gym
    import envs  # noqa: F401  (registers the id)

    env = gym.make("mango/CompressionControl-v0", backend="surrogate", workload="lm-tiny-cosine")
    vec = envs.SurrogateVecEnv(num_envs=256, split="train")          # batched, numpy-fast
    sb3_vec = envs.SB3VecEnvAdapter(envs.SurrogateVecEnv(num_envs=16))  # for stable-baselines3

Public surface:

- :class:`CompressionEnv` (``envs.env``) - the single-episode env over the ``surrogate`` / ``training`` /
  ``replay`` backends; :class:`SurrogateVecEnv` (``envs.surrogate``) - the vectorized surrogate;
  :class:`SB3VecEnvAdapter` (``envs.sb3``) - it as an SB3 ``VecEnv``.
- :data:`TRAIN_WORKLOADS` / :data:`HELDOUT_WORKLOADS` / :func:`get_workload` (``envs.workloads``).
- :data:`OBJECTIVE_PRESETS` / :class:`ObjectiveSampler` (``envs.objectives``); :class:`RewardConfig`
  (``envs.reward``).
- ``mango record`` (``envs.record``) records traces; ``mango fit`` (``envs.fit``) fits the surrogate on them.

Torch is imported only by the training backend, the recorder and the fitter (memory formula), never by the
surrogate path.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from envs.env import BACKENDS, CompressionEnv
from envs.objectives import OBJECTIVE_PRESETS, ObjectiveSampler
from envs.reward import RewardConfig
from envs.surrogate import SurrogateModel, SurrogateVecEnv
from envs.workloads import HELDOUT_WORKLOADS, TRAIN_WORKLOADS, WORKLOADS, Workload, get_workload

__all__ = [
    "BACKENDS",
    "ENV_ID",
    "HELDOUT_WORKLOADS",
    "OBJECTIVE_PRESETS",
    "TRAIN_WORKLOADS",
    "WORKLOADS",
    "CompressionEnv",
    "ObjectiveSampler",
    "RewardConfig",
    "SB3VecEnvAdapter",
    "SurrogateModel",
    "SurrogateVecEnv",
    "Workload",
    "get_workload",
]

#: The Gymnasium id of :class:`CompressionEnv`; ``gym.make_vec(ENV_ID, num_envs=n,
#: vectorization_mode="vector_entry_point")`` builds a :class:`SurrogateVecEnv`.
ENV_ID = "mango/CompressionControl-v0"

if ENV_ID not in gym.registry:
    gym.register(
        id=ENV_ID,
        entry_point="envs.env:CompressionEnv",
        vector_entry_point="envs.surrogate:SurrogateVecEnv",
    )


def __getattr__(name: str) -> Any:  # SB3 is imported only when the adapter is asked for
    if name == "SB3VecEnvAdapter":
        from envs.sb3 import SB3VecEnvAdapter

        return SB3VecEnvAdapter
    raise AttributeError(f"module 'envs' has no attribute {name!r}")
