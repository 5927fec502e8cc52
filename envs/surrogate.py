"""``SurrogateVecEnv``: ``num_envs`` surrogate episodes as one :class:`gymnasium.vector.VectorEnv`.

The simulation is :class:`envs.simulator.SurrogateEngine` on a fitted
:class:`envs.surrogate_model.SurrogateModel`; this module adds the gymnasium vector API (spaces, seeding,
same-step autoreset) and the default model (:func:`envs.fit.default_model`: the one fitted on the shipped
traces). For SB3, wrap it in :class:`envs.sb3.SB3VecEnvAdapter`.

Dependency direction: ``surrogate -> simulator -> surrogate_model`` and ``surrogate -> fit ->
surrogate_model``; neither the simulator nor the fit imports this module. The names of the simulator and
the model modules are re-exported here for existing imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv

from client.protocol import DEFAULT_GRID, MAX_HISTORY, CompressionSetting, Objective, ObservationSpec
from envs.episode import resolve_objective
from envs.fit import default_model
from envs.hardware import HardwareSampler
from envs.objectives import ObjectiveSampler
from envs.reward import RewardConfig
from envs.simulator import NOISE_CHANNELS, SurrogateBackend, SurrogateEngine, resolve_workloads
from envs.surrogate_model import SURROGATE_VERSION, SurrogateModel, WorkloadTables

__all__ = [
    "NOISE_CHANNELS",
    "SURROGATE_VERSION",
    "SurrogateBackend",
    "SurrogateEngine",
    "SurrogateModel",
    "SurrogateVecEnv",
    "WorkloadTables",
    "resolve_workloads",
]


class SurrogateVecEnv(VectorEnv):
    """``num_envs`` surrogate episodes stepped at once (pure numpy; tens of thousands of steps per second).

    Same-step autoreset (``metadata["autoreset_mode"]``): when an episode ends, the returned observation is
    the new episode's first one and the last one is in ``info["final_obs"]`` (object array, masked by
    ``info["_final_obs"]``). ``info`` always carries the raw reward terms (``loss_term``, ``memory_term``,
    ``energy_term``, ``time_term``) and ``over_budget`` / ``diverged`` as arrays.

    :param num_envs: episodes side by side. 64-256 amortize numpy's per-call overhead best.
    :param workload: a workload name, a list of names, or ``None`` for every workload of ``split``.
    :param split: ``"train"`` (default) or ``"heldout"`` when ``workload`` is ``None``.
    :param objective: fix every episode's objective (else one is sampled per episode).
    :param objective_sampler: the per-episode sampler (default :class:`envs.objectives.ObjectiveSampler`).
    :param model: a fitted :class:`SurrogateModel` (default: :func:`envs.fit.default_model`, the shipped
        traces').
    :param window: history window of the observation (1..8).
    :param reward: penalty knobs (:class:`envs.reward.RewardConfig`).
    :param initial_setting: setting of each episode's first interval (default: the first decision from the
        objective and the hardware, :func:`client.controllers.first_setting`).
    :param job_seeds: size of the job-seed pool.
    :param hardware: per-episode hardware draws (default :class:`envs.hardware.HardwareSampler`; ``None``:
        the fitted per-workload cost ratios, no profile features).
    :param depth: ``(lo, hi)`` of each episode's extra log-drop of the reference loss, a job that trains
        further than the recorded one (:class:`envs.simulator.SurrogateEngine`; ``(0, 0)``: the recorded
        curves).
    :param opening: ``(p, most)``: the share of episodes that open with a random first-decision candidate
        held for up to ``most`` intervals (:class:`envs.simulator.SurrogateEngine`; training only).

    Seeding: ``reset(seed=s)`` seeds sub-env ``i`` with ``s + i``, like gymnasium's vector envs, and sub-env
    ``i`` then produces exactly the episodes of ``CompressionEnv(backend="surrogate").reset(seed=s + i)``.
    """

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 64,
        workload: str | Sequence[str] | None = None,
        split: str = "train",
        objective: Objective | str | None = None,
        objective_sampler: ObjectiveSampler | None = None,
        model: SurrogateModel | None = None,
        window: int = MAX_HISTORY,
        reward: RewardConfig | None = None,
        initial_setting: CompressionSetting | None = None,
        job_seeds: int = 64,
        hardware: Any = "default",
        depth: tuple[float, float] = (0.0, 0.0),
        opening: tuple[float, int] = (0.0, 1),
    ) -> None:
        if isinstance(hardware, str) and hardware == "default":
            hardware = HardwareSampler()
        model = model or default_model()
        self.names = resolve_workloads(workload, split, model)
        self.fixed_objective = resolve_objective(objective)
        self.obs_spec = ObservationSpec(window=window)
        self.engine = SurrogateEngine(
            model,
            self.names,
            num_envs,
            self.obs_spec,
            objective_sampler or ObjectiveSampler(),
            reward or RewardConfig(),
            initial_setting,
            job_seeds,
            hardware,
            depth,
            opening,
        )
        self.num_envs = num_envs
        c = ObservationSpec.CLIP
        self.single_observation_space = spaces.Box(-c, c, shape=(self.obs_spec.size,), dtype=np.float32)
        self.single_action_space = spaces.MultiDiscrete(np.array(DEFAULT_GRID.nvec, dtype=np.int64))
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self._rngs = [seeding.np_random(None)[0] for _ in range(num_envs)]
        self._obs = np.zeros((num_envs, self.obs_spec.size), dtype=np.float32)
        self._all = np.arange(num_envs)

    @property
    def workload_names(self) -> tuple[str, ...]:
        return self.names

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every sub-env; ``options`` may hold ``objective`` (Objective or preset name), ``workload``
        and ``job_seed`` for this reset."""
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} envs")
            self._rngs = [seeding.np_random(s)[0] for s in seeds]
            self._np_random, self._np_random_seed = seeding.np_random(seeds[0])
        opts = options or {}
        obj = resolve_objective(opts.get("objective")) or self.fixed_objective
        self.engine.reset_envs(self._all, self._rngs, obj, opts.get("workload"), opts.get("job_seed"))
        return self.engine.encoder.observe(), self._reset_info()

    def _reset_info(self) -> dict[str, Any]:
        return {"workload_idx": self.engine.w.copy(), "job_seed": self.engine.job_seed.copy()}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        eng = self.engine
        reward, terminated, info = eng.step(actions)
        obs = eng.encoder.observe()
        done = np.flatnonzero(terminated)
        if done.size:
            final = np.full(self.num_envs, None, dtype=object)
            for i in done:
                final[i] = obs[i].copy()
            info["final_obs"] = final
            info["_final_obs"] = terminated.copy()
            eng.reset_envs(done, [self._rngs[i] for i in done], self.fixed_objective)
            obs = eng.encoder.observe()
        truncated = np.zeros(self.num_envs, dtype=bool)
        return obs, reward, terminated, truncated, info
