"""The reward: one function shared by every backend (training, surrogate, replay) and the vectorized env.

``r_t = -(w_loss*l_t + w_memory*m_t + w_energy*e_t + w_time*tau_t) - penalties``, every term relative to the
uncompressed reference run of the same workload and job seed:

* ``l_t = (loss_t - ref_loss_t) / ref_loss_t`` - excess training loss over the reference *at the same step*
  (same data order, same init), relative to the reference's loss *at that step*: a loss 20 % above the
  uncompressed run's costs 0.2, like 20 % more time (issue 13; the first design divided by the initial
  loss, so late in a run a 20 % worse loss cost like 7 %). Can be slightly negative (compression noise can
  act as a regularizer).
* ``m_t = state_bytes_t / ref_state_bytes`` - optimizer + compression state over the reference's (AdamW).
  Where the objective sets a memory budget, memory is a *constraint*, not a cost: ``m_t`` leaves the
  weighted sum and an interval over the budget pays ``budget_penalty`` plus ``budget_slope`` times its
  relative overshoot.
* ``e_t = energy_j_t / ref_interval_energy_j`` and ``tau_t = interval_s_t / ref_interval_s`` - this interval's
  energy and wall time over the reference's per-interval median (the median of the control intervals, so one
  slow interval on a shared machine does not skew every episode).

Optional terminal term (:attr:`RewardConfig.final_loss_intervals`, default 0 = off): the episode's last
interval also pays ``final_loss_intervals * w_loss * l_T``, so the final loss (what a user and the demo's
verdict see) counts beyond its one interval. The per-interval sum charges damage done at interval t only in
the intervals left, which makes compressing late in a run nearly free (issue 13, session 4).

Penalties (:class:`RewardConfig`): ``budget_penalty`` (+ ``budget_slope`` x overshoot) per interval whose
state exceeds the objective's memory budget, and ``divergence_penalty`` once when the loss exceeds
``divergence_factor * initial_loss`` (or is non-finite), which also ends the episode.

All functions take floats or numpy arrays (broadcasting), so the vectorized environment and the
single-episode environment compute bit-identical rewards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["TERM_NAMES", "RewardConfig", "penalized_reward", "reward_from_terms", "reward_terms"]

#: Keys of the raw terms in ``info`` (and in recorded traces).
TERM_NAMES: tuple[str, ...] = ("loss_term", "memory_term", "energy_term", "time_term")


@dataclass(frozen=True)
class RewardConfig:
    """Penalty knobs of the reward (the four terms themselves have no knobs).

    :ivar budget_penalty: cost added per interval whose ``state_bytes`` exceed the objective's
        ``memory_budget_bytes`` (0 disables). 1.0 is about the memory term of a dense run, so breaking the
        budget is never cheaper than any feasible setting under a memory-weighted objective.
    :ivar budget_slope: extra cost per unit of relative overshoot (``state_bytes / budget - 1``), so a
        policy that cannot fit is pushed towards the smallest overshoot.
    :ivar divergence_penalty: cost added once when the run diverges (the episode then ends). Size it to
        dominate a whole episode of excess loss: 10 by default.
    :ivar divergence_factor: a mean interval loss above ``divergence_factor * initial_loss`` (or non-finite)
        counts as divergence. Must be > 1.
    :ivar final_loss_intervals: extra weight of the last interval's loss term, in intervals (0: off, the
        reward of every evaluation so far). With ``K / 2`` (6 for 12 intervals) a static setting's final
        loss counts about as much as its per-interval sum; ``mango train --final-loss-intervals`` sets it
        for training only (validation and ``mango eval`` keep 0).
    """

    budget_penalty: float = 1.0
    budget_slope: float = 2.0
    divergence_penalty: float = 10.0
    divergence_factor: float = 3.0
    final_loss_intervals: float = 0.0

    def __post_init__(self) -> None:
        knobs = (self.budget_penalty, self.divergence_penalty, self.budget_slope, self.final_loss_intervals)
        if min(knobs) < 0:
            raise ValueError(
                "budget_penalty, budget_slope, divergence_penalty and final_loss_intervals must be >= 0"
            )
        if not self.divergence_factor > 1.0:
            raise ValueError(f"divergence_factor={self.divergence_factor} must be > 1 (e.g. 3.0)")


def reward_terms(
    loss: Any,
    state_bytes: Any,
    energy_j: Any,
    interval_s: Any,
    *,
    ref_loss: Any,
    ref_state_bytes: Any,
    ref_energy_j: Any,
    ref_interval_s: Any,
    initial_loss: Any,
) -> tuple[Any, Any, Any, Any]:
    """The four raw terms ``(l, m, e, tau)`` (see the module docstring); float64 in, float64 out.

    ``initial_loss`` is kept for callers' symmetry with the divergence check; the loss term's unit is the
    reference loss at the same step (floored at 1e-6 of the initial loss for a reference that reaches 0).
    """
    ref = np.maximum(np.asarray(ref_loss, dtype=np.float64), 1e-6 * np.abs(np.asarray(initial_loss)))
    l_t = (np.asarray(loss, dtype=np.float64) - ref) / ref
    m_t = np.asarray(state_bytes, dtype=np.float64) / ref_state_bytes
    e_t = np.asarray(energy_j, dtype=np.float64) / ref_energy_j
    tau_t = np.asarray(interval_s, dtype=np.float64) / ref_interval_s
    return l_t, m_t, e_t, tau_t


def reward_from_terms(weights: Any, terms: tuple[Any, Any, Any, Any]) -> Any:
    """``-(w . terms)`` with ``weights`` float64 ``[..., 4]`` (loss, memory, energy, time)."""
    w = np.asarray(weights, dtype=np.float64)
    return -(w[..., 0] * terms[0] + w[..., 1] * terms[1] + w[..., 2] * terms[2] + w[..., 3] * terms[3])


def penalized_reward(
    weights: Any,
    terms: tuple[Any, Any, Any, Any],
    *,
    state_bytes: Any,
    budget_bytes: Any,
    loss: Any,
    initial_loss: Any,
    config: RewardConfig,
    last: Any = False,
) -> tuple[Any, Any, Any]:
    """``(reward, over_budget, diverged)``: :func:`reward_from_terms` minus the penalties of ``config``.

    ``budget_bytes`` of 0 means no budget; with one, the memory term leaves the weighted sum (memory is a
    constraint) and an over-budget interval pays ``budget_penalty + budget_slope * overshoot``. Works
    elementwise on arrays (the vectorized env) and on floats. ``last`` marks the episode's last interval
    (for :attr:`RewardConfig.final_loss_intervals`).
    """
    w = np.array(weights, dtype=np.float64, copy=True)
    budget = np.asarray(budget_bytes, dtype=np.float64)
    has_budget = budget > 0
    w[..., 1] = np.where(has_budget, 0.0, w[..., 1])
    reward = reward_from_terms(w, terms)
    sb = np.asarray(state_bytes, dtype=np.float64)
    over = has_budget & (sb > budget)
    overshoot = np.where(over, sb / np.where(has_budget, budget, 1.0) - 1.0, 0.0)
    loss_a = np.asarray(loss, dtype=np.float64)
    diverged = ~np.isfinite(loss_a) | (loss_a > config.divergence_factor * np.asarray(initial_loss))
    reward = reward - (config.budget_penalty + config.budget_slope * overshoot) * over
    reward = reward - config.divergence_penalty * diverged
    if config.final_loss_intervals > 0:
        final = np.asarray(last, dtype=bool) & ~diverged
        reward = reward - config.final_loss_intervals * np.where(final, w[..., 0] * terms[0], 0.0)
    return reward, over, diverged
