"""What every backend of :class:`envs.env.CompressionEnv` shares: the episode types, the draws, the scoring.

The three backends (:mod:`envs.training`, :mod:`envs.simulator`, :mod:`envs.replay`) import this module and
nothing of :mod:`envs.env`; the env imports them. It needs neither gymnasium nor torch.

* :class:`Backend` - what a backend implements: ``reset`` returns an :class:`EpisodeStart`, ``step`` a
  :class:`StepOutcome`.
* :func:`draw_episode` - the per-episode draws (workload, job seed, objective weights, budget), in the order
  every single-episode backend makes them, so equal seeds give equal episodes on any backend.
* :func:`score` - reward, raw terms and flags of one telemetry record (:mod:`envs.reward`).
* :func:`resolve_objective` - an :class:`~client.protocol.Objective` from the forms the env accepts.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from client.protocol import CompressionSetting, CostProfile, Objective, Reference, TelemetryRecord
from envs.objectives import ObjectiveSampler, make_objective, preset
from envs.reward import RewardConfig, penalized_reward, reward_terms

__all__ = [
    "Backend",
    "EpisodeStart",
    "StepOutcome",
    "draw_episode",
    "loss_term_of",
    "resolve_objective",
    "score",
]


def resolve_objective(objective: Any) -> Objective | None:
    """An :class:`Objective` from an Objective, a preset name, a dict of fields or 4 weights (None passes).

    :raises ValueError: unknown preset, wrong number of weights, negative weights, or all weights zero.
    """
    if objective is None or isinstance(objective, Objective):
        return objective
    if isinstance(objective, str):
        return preset(objective)
    if isinstance(objective, dict):
        w = [float(objective.get(k, 0.0)) for k in ("w_loss", "w_memory", "w_energy", "w_time")]
        if sum(abs(x) for x in w) == 0:
            raise ValueError("objective weights are all zero; give at least one positive weight")
        return Objective(**objective)
    w = np.asarray(objective, dtype=np.float64).reshape(-1)
    if w.size == 4 and not np.any(w):
        raise ValueError("objective weights are all zero; give at least one positive weight")
    return make_objective(w)


def draw_episode(
    rng: np.random.Generator,
    names: list[str],
    job_seeds: int,
    sampler: ObjectiveSampler,
    *,
    workload: str | None = None,
    job_seed: int | None = None,
) -> tuple[int, int, np.ndarray, float | None]:
    """The per-episode draws, in the order every backend makes them: ``(workload index, job seed,
    objective weights, budget fraction or None)``. A given ``workload`` (one of ``names``) or ``job_seed``
    replaces its draw; the draws are made anyway, so the generator advances the same either way."""
    wi = int(rng.integers(len(names)))
    js = int(rng.integers(job_seeds))
    w, budget = sampler.sample_weights(rng)
    if workload is not None:
        wi = names.index(workload)
    if job_seed is not None:
        js = int(job_seed)
    return wi, js, w, budget


@dataclass
class EpisodeStart:
    """What a backend returns from ``reset``: the episode's identity, normalization and first record."""

    workload: str
    job_seed: int
    objective: Objective
    reference: Reference
    record: TelemetryRecord
    info: dict[str, Any] = field(default_factory=dict)
    profile: CostProfile | list[float] | None = None  # the job's hardware cost profile (or its features)


@dataclass
class StepOutcome:
    """What a backend returns from ``step``: the interval's record, reward, terms and flags."""

    record: TelemetryRecord
    reward: float
    terms: tuple[float, float, float, float]
    ref_loss: float
    over_budget: bool
    diverged: bool
    info: dict[str, Any] = field(default_factory=dict)


class Backend(ABC):
    """One episode at a time of some job simulator (see :mod:`envs.env` for the three kinds)."""

    name: str = "backend"

    @abstractmethod
    def reset(
        self,
        rng: np.random.Generator,
        *,
        objective: Objective | None,
        workload: str | None,
        job_seed: int | None,
    ) -> EpisodeStart: ...

    @abstractmethod
    def step(self, action: np.ndarray, setting: CompressionSetting) -> StepOutcome: ...

    def close(self) -> None:  # noqa: B027 - optional
        """Release resources (open files, meters)."""


def score(
    record: TelemetryRecord,
    *,
    ref_loss: float,
    ref_state_bytes: int,
    ref_energy_j: float,
    ref_interval_s: float,
    initial_loss: float,
    objective: Objective,
    config: RewardConfig,
    diverged: bool = False,
    prev_loss_term: float = 0.0,
    intervals: int = 1,
) -> tuple[float, tuple[float, float, float, float], bool, bool]:
    """Reward, terms, over-budget and divergence flags of one record (the single-episode backends' path);
    ``prev_loss_term``: the previous interval's loss term and
    ``intervals`` the episode's control intervals (for ``RewardConfig.loss_credit="final"``)."""
    terms = reward_terms(
        record.loss,
        record.state_bytes,
        record.energy_j,
        record.interval_s,
        ref_loss=ref_loss,
        ref_state_bytes=ref_state_bytes,
        ref_energy_j=ref_energy_j,
        ref_interval_s=ref_interval_s,
        initial_loss=initial_loss,
    )
    w = np.array(
        [objective.w_loss, objective.w_memory, objective.w_energy, objective.w_time], dtype=np.float64
    )
    r, over, div = penalized_reward(
        w,
        terms,
        state_bytes=record.state_bytes,
        budget_bytes=objective.memory_budget_bytes or 0,
        loss=math.inf if diverged else record.loss,
        initial_loss=initial_loss,
        config=config,
        prev_loss_term=prev_loss_term,
        intervals=intervals,
    )
    return float(r), tuple(float(t) for t in terms), bool(over), bool(div)  # type: ignore[return-value]


def loss_term_of(record: TelemetryRecord, ref_loss: float, initial_loss: float) -> float:
    """The loss term ``l`` of one record (the warm-up interval's is ``l_0`` of ``loss_credit="final"``)."""
    return float(
        reward_terms(record.loss, 1, 1.0, 1.0, ref_loss=ref_loss, ref_state_bytes=1, ref_energy_j=1.0,
                     ref_interval_s=1.0, initial_loss=initial_loss)[0]
    )  # fmt: skip
