"""Offline environment for learning compression control (see docs/architecture.md, "envs").

Importing the package imports nothing: the workloads (``envs.workloads``, ``envs.models``, ``envs.data``,
``envs.objectives``) load without gymnasium or SB3, and each name below is imported on first use. Importing
:mod:`envs.env` (or reading any env name here, e.g. ``envs.ENV_ID``) registers the Gymnasium id
``mango/CompressionControl-v0``::

    import gymnasium as gym
    import envs

    env = gym.make(envs.ENV_ID, backend="surrogate", workload="lm-tiny-cosine")
    vec = envs.SurrogateVecEnv(num_envs=256, split="train")          # batched, numpy-fast
    sb3_vec = envs.SB3VecEnvAdapter(envs.SurrogateVecEnv(num_envs=16))  # for stable-baselines3

Public surface:

- :class:`CompressionEnv` (``envs.env``) - the single-episode env over the ``surrogate`` / ``training`` /
  ``replay`` backends; :class:`SurrogateVecEnv` (``envs.surrogate``) - the vectorized surrogate;
  :class:`SB3VecEnvAdapter` (``envs.sb3``) - it as an SB3 ``VecEnv``.
- :data:`TRAIN_WORKLOADS` / :data:`VAL_WORKLOADS` / :data:`HELDOUT_WORKLOADS` / :func:`get_workload`
  (``envs.workloads``).
- :data:`OBJECTIVE_PRESETS` / :class:`ObjectiveSampler` (``envs.objectives``); :class:`RewardConfig`
  (``envs.reward``).
- ``mango record`` (``envs.record``) records traces; ``mango fit`` (``envs.fit``) fits the surrogate on them.

Torch is imported only by the training backend, the recorder and the workloads' models and data, never by
the surrogate path.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from envs.env import BACKENDS, ENV_ID, CompressionEnv
    from envs.objectives import OBJECTIVE_PRESETS, ObjectiveSampler
    from envs.reward import RewardConfig
    from envs.sb3 import SB3VecEnvAdapter
    from envs.surrogate import SurrogateVecEnv
    from envs.surrogate_model import SurrogateModel
    from envs.workloads import (
        HELDOUT_WORKLOADS,
        TRAIN_WORKLOADS,
        VAL_WORKLOADS,
        WORKLOADS,
        Workload,
        get_workload,
    )

__all__ = [
    "BACKENDS",
    "ENV_ID",
    "HELDOUT_WORKLOADS",
    "OBJECTIVE_PRESETS",
    "TRAIN_WORKLOADS",
    "VAL_WORKLOADS",
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

_WHERE = {
    "BACKENDS": "envs.env",
    "ENV_ID": "envs.env",
    "CompressionEnv": "envs.env",
    "OBJECTIVE_PRESETS": "envs.objectives",
    "ObjectiveSampler": "envs.objectives",
    "RewardConfig": "envs.reward",
    "SB3VecEnvAdapter": "envs.sb3",
    "SurrogateVecEnv": "envs.surrogate",
    "SurrogateModel": "envs.surrogate_model",
    "HELDOUT_WORKLOADS": "envs.workloads",
    "TRAIN_WORKLOADS": "envs.workloads",
    "VAL_WORKLOADS": "envs.workloads",
    "WORKLOADS": "envs.workloads",
    "Workload": "envs.workloads",
    "get_workload": "envs.workloads",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'envs' has no attribute {name!r}")
