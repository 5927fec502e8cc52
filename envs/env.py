"""``CompressionEnv``: the Gymnasium environment (``mango/CompressionControl-v0``) over three backends.

One step is one control interval of a training job: the agent picks a setting ``(rank, bits, gamma)`` as a
``MultiDiscrete`` action over :data:`client.protocol.DEFAULT_GRID`, the backend runs the interval, and the
observation is ``ObservationSpec.encode(history, objective, reference)`` - the same function the policy
service calls - so a policy trained here reads production telemetry unchanged. The reward is
:mod:`envs.reward`'s, relative to the uncompressed reference run of the same workload and job seed.

Backends (``backend=``):

* ``"surrogate"`` (default) - :mod:`envs.simulator` on a model fitted on recorded traces
  (:func:`envs.fit.default_model` unless ``model=`` is given); microseconds per step.
* ``"training"`` - :mod:`envs.training`: real models, real data, the real ``MangoAdamW``; seconds per step.
* ``"replay"`` - :mod:`envs.replay`: plays recorded traces back (each action answered by the recorded
  interval with the nearest setting).

Episode: ``reset`` runs one uncontrolled warm-up interval (``initial_setting``, default off) and returns its
observation; then ``intervals`` steps; the last one returns ``terminated=True`` (the job ends: progress is in
the observation, so no time-limit truncation). Divergence (loss above ``divergence_factor`` x the initial
loss, or non-finite) also terminates, with a penalty.

``reset(options=...)`` keys: ``objective`` (an :class:`Objective`, a preset name or 4 weights) fixes this
episode's objective; ``workload`` picks the workload (one of the env's); ``job_seed`` the job seed.

``info`` of every step: the four raw reward terms (``loss_term``, ``memory_term``, ``energy_term``,
``time_term``), ``over_budget``, ``diverged``, ``ref_loss``, the record's ``loss`` / ``state_bytes`` /
``interval_s`` / ``energy_j`` / ``energy_source`` and the applied ``setting`` label. The reset ``info`` holds
``workload``, ``job_seed``, ``objective``, ``reference`` and ``setting``.

The backends share :mod:`envs.episode` (episode types, draws, scoring) and none imports this module.
Importing this module registers :data:`ENV_ID` with Gymnasium.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from client.protocol import (
    DEFAULT_GRID,
    MAX_HISTORY,
    CompressionSetting,
    CostProfile,
    Objective,
    ObservationSpec,
    Reference,
    TelemetryRecord,
)
from envs.episode import Backend, EpisodeStart, StepOutcome, draw_episode, resolve_objective, score
from envs.fit import default_model
from envs.hardware import HardwareSampler, local_profile
from envs.objectives import OBJECTIVE_PRESETS, ObjectiveSampler
from envs.replay import ReplayBackend
from envs.reward import TERM_NAMES, RewardConfig
from envs.simulator import SurrogateBackend, resolve_workloads
from envs.workloads import Workload, get_workload

__all__ = [
    "BACKENDS",
    "ENV_ID",
    "Backend",
    "CompressionEnv",
    "EpisodeStart",
    "StepOutcome",
    "draw_episode",
    "resolve_objective",
    "score",
]

#: Backend names ``CompressionEnv(backend=...)`` accepts.
BACKENDS: tuple[str, ...] = ("surrogate", "training", "replay")

#: The Gymnasium id of :class:`CompressionEnv`, registered when this module is imported;
#: ``gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point")`` builds a
#: :class:`envs.surrogate.SurrogateVecEnv`.
ENV_ID = "mango/CompressionControl-v0"


class CompressionEnv(gym.Env):
    """Pick a compression setting per control interval of a training job (see the module docstring).

    :param backend: ``"surrogate"`` (default), ``"training"`` or ``"replay"``.
    :param workload: a workload name (:data:`envs.workloads.WORKLOADS`), a list of names, or ``None`` for
        every workload of ``split`` (one drawn per episode).
    :param split: ``"train"`` (default) or ``"heldout"``: the pool when ``workload`` is ``None``.
    :param objective: fix the objective (an :class:`Objective`, a preset name of
        :data:`envs.objectives.OBJECTIVE_PRESETS`, or 4 weights); default: sampled per episode.
    :param objective_sampler: the per-episode sampler (:class:`envs.objectives.ObjectiveSampler`).
    :param window: telemetry records in the observation (1..8; the service's context is 8).
    :param reward: penalty knobs (:class:`envs.reward.RewardConfig`).
    :param initial_setting: setting of the first interval (default: the first decision,
        :func:`client.controllers.first_setting`, from the objective and the hardware cost profile, as a
        job makes it before its first interval).
    :param hardware: surrogate backend: per-episode hardware draws (:class:`envs.hardware.HardwareSampler`,
        the default) or ``None`` (the fitted per-workload costs, no profile features). Training backend:
        the :class:`CostProfile` of this machine (default ``envs/profiles/cpu-dev-2core.json`` on a CPU).
    :param job_seeds: job seeds are drawn from ``range(job_seeds)``; for the training backend each one costs
        a reference run (cached on disk), so keep it small (default 4); the surrogate defaults to 64.
    :param interval_steps: override the workloads' optimizer steps per interval (training backend only;
        must be >= 1).
    :param intervals: override the workloads' control intervals per episode (training backend only, >= 1).
    :param training: :class:`envs.training.TrainingConfig` for the training backend (device, clock, threads,
        cache).
    :param model: a fitted :class:`envs.surrogate_model.SurrogateModel` (surrogate backend; default:
        :func:`envs.fit.default_model`, fitted on the shipped traces).
    :param traces: trace file or directory (replay backend; default the shipped traces).
    :param render_mode: ``None`` or ``"ansi"`` (a one-line summary of the last interval).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"]}

    def __init__(
        self,
        backend: str = "surrogate",
        workload: str | Sequence[str] | None = None,
        split: str = "train",
        objective: Objective | str | Sequence[float] | None = None,
        objective_sampler: ObjectiveSampler | None = None,
        window: int = MAX_HISTORY,
        reward: RewardConfig | None = None,
        initial_setting: CompressionSetting | None = None,
        job_seeds: int | None = None,
        interval_steps: int | None = None,
        intervals: int | None = None,
        training: Any = None,
        model: Any = None,
        traces: Any = None,
        render_mode: str | None = None,
        hardware: Any = "default",
        depth: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is unknown; choose one of {BACKENDS}")
        if interval_steps is not None and int(interval_steps) < 1:
            raise ValueError(
                f"interval_steps={interval_steps}: a control interval needs at least 1 optimizer step "
                "(10-25 keeps training-backend episodes under a minute)"
            )
        if intervals is not None and int(intervals) < 1:
            raise ValueError(f"intervals={intervals}: an episode needs at least 1 control interval")
        if (interval_steps is not None or intervals is not None) and backend != "training":
            raise ValueError(
                f"interval_steps / intervals can only be overridden on the training backend; the {backend} "
                "backend replays the recorded episode shape (record traces with the new shape instead)"
            )
        if tuple(depth) != (0.0, 0.0) and backend != "surrogate":
            raise ValueError(
                f"depth={tuple(depth)!r} deepens the surrogate's reference curves; the {backend} backend "
                "trains (or replays) real runs"
            )
        self.depth = tuple(depth)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r}; choose None or 'ansi'")
        if job_seeds is not None and int(job_seeds) < 1:
            raise ValueError(f"job_seeds={job_seeds} must be >= 1")
        self.backend_name = backend
        if backend == "surrogate":
            model = model or default_model()
        self.workload_names = resolve_workloads(workload, split, model if backend == "surrogate" else None)
        self.fixed_objective = resolve_objective(objective)
        self.sampler = objective_sampler or ObjectiveSampler()
        self.reward_config = reward or RewardConfig()
        self.initial_setting = initial_setting
        if initial_setting is not None:
            DEFAULT_GRID.check(initial_setting)
        self.hardware = hardware
        self.obs_spec = ObservationSpec(window=window)
        self.grid = DEFAULT_GRID
        self.render_mode = render_mode
        c = ObservationSpec.CLIP
        self.observation_space = spaces.Box(-c, c, shape=(self.obs_spec.size,), dtype=np.float32)
        self.action_space = spaces.MultiDiscrete(np.array(self.grid.nvec, dtype=np.int64))
        workloads = [get_workload(n) for n in self.workload_names]
        if interval_steps is not None or intervals is not None:
            changes: dict[str, int] = {}
            if interval_steps is not None:
                changes["steps_per_interval"] = int(interval_steps)
            if intervals is not None:
                changes["intervals"] = int(intervals)
            workloads = [w.with_overrides(**changes) for w in workloads]
        self.backend: Backend = self._make_backend(backend, workloads, job_seeds, training, model, traces)
        self.history: list[TelemetryRecord] = []
        self.objective: Objective | None = None
        self.reference: Reference | None = None
        self.profile: CostProfile | list[float] | None = None
        self._done = True
        self._last_info: dict[str, Any] = {}

    def _make_backend(
        self,
        backend: str,
        workloads: list[Workload],
        job_seeds: int | None,
        training: Any,
        model: Any,
        traces: Any,
    ) -> Backend:
        if backend == "surrogate":
            hw = HardwareSampler() if isinstance(self.hardware, str) else self.hardware
            return SurrogateBackend(
                model,
                self.workload_names,
                self.obs_spec,
                self.sampler,
                self.reward_config,
                self.initial_setting,
                job_seeds or 64,
                hw,
                self.depth,
            )
        if backend == "training":
            from envs.training import TrainingBackend  # lazy on purpose: torch, real models and data

            profile = local_profile(training) if isinstance(self.hardware, str) else self.hardware
            return TrainingBackend(
                workloads,
                training,
                self.sampler,
                self.reward_config,
                self.initial_setting,
                job_seeds or 4,
                profile=profile,
            )
        return ReplayBackend(self.workload_names, traces, self.sampler, self.reward_config, job_seeds or 64)

    # ------------------------------------------------------------------------------------------ gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        opts = dict(options or {})
        unknown = set(opts) - {"objective", "workload", "job_seed"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; use objective, workload, job_seed")
        objective = resolve_objective(opts.get("objective")) or self.fixed_objective
        workload = opts.get("workload")
        if workload is not None and workload not in self.workload_names:
            raise ValueError(f"workload {workload!r} is not one of this env's {list(self.workload_names)}")
        start = self.backend.reset(
            self.np_random, objective=objective, workload=workload, job_seed=opts.get("job_seed")
        )
        self.objective = start.objective
        self.reference = start.reference
        self.profile = start.profile
        self.history = [start.record]
        self._done = False
        info = {
            "workload": start.workload,
            "job_seed": start.job_seed,
            "objective": start.objective.model_dump(),
            "reference": start.reference.model_dump(),
            "setting": start.record.setting.label(),
            "backend": self.backend_name,
            **start.info,
        }
        self._last_info = info
        return self._observe(), info

    def _observe(self) -> np.ndarray:
        assert self.objective is not None
        return self.obs_spec.encode(
            self.history[-self.obs_spec.window :], self.objective, self.reference, self.profile
        )

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._done:
            raise RuntimeError("the episode is over (or never started): call reset() first")
        a = np.asarray(action, dtype=np.int64).reshape(-1)
        if a.shape != (3,) or not self.action_space.contains(a):
            raise ValueError(f"action {action!r} is not in {self.action_space} (rank, bits, gamma indices)")
        setting = self.grid.setting(a)
        out = self.backend.step(a, setting)
        self.history.append(out.record)
        if len(self.history) > MAX_HISTORY:
            del self.history[0]
        terminated = bool(out.info.get("last", False)) or out.diverged
        self._done = terminated
        rec = out.record
        info = {
            **dict(zip(TERM_NAMES, out.terms, strict=True)),
            "over_budget": out.over_budget,
            "diverged": out.diverged,
            "ref_loss": out.ref_loss,
            "loss": rec.loss,
            "state_bytes": rec.state_bytes,
            "interval_s": rec.interval_s,
            "energy_j": rec.energy_j,
            "energy_source": rec.energy_source,
            "setting": rec.setting.label(),
            "step": rec.step,
            **{k: v for k, v in out.info.items() if k != "last"},
        }
        self._last_info = info
        return self._observe(), float(out.reward), terminated, False, info

    def render(self) -> str | None:
        if self.render_mode != "ansi" or not self.history:
            return None
        r = self.history[-1]
        i = self._last_info
        return (
            f"step {r.step} {r.setting.label():>14} loss {r.loss:.4f} "
            f"(ref {i.get('ref_loss', float('nan')):.4f}) "
            f"state {r.state_bytes} B  {r.interval_s:.3f} s  {r.energy_j:.2f} J ({r.energy_source})"
        )

    def close(self) -> None:
        self.backend.close()
        super().close()


def objective_presets() -> list[str]:
    """Names of the objective presets (for CLIs)."""
    return list(OBJECTIVE_PRESETS)


if ENV_ID not in gym.registry:
    gym.register(
        id=ENV_ID,
        entry_point="envs.env:CompressionEnv",
        vector_entry_point="envs.surrogate:SurrogateVecEnv",
    )
