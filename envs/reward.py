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

**Where the loss term is paid** (:attr:`RewardConfig.loss_credit`). Users, the demo's verdict and ``mango
eval`` judge a run by its *final* loss (:func:`objective_cost`: ``J = w_loss*l_T + w_memory*mean(m) +
w_energy*mean(e) + w_time*mean(tau)``, lower is better). The reward follows:

* ``"final"`` (default): interval t pays the *change* of the loss term, ``K * w_loss * (l_t - l_{t-1})``
  instead of ``w_loss * l_t`` (K: the episode's control intervals; ``l_0``: the warm-up interval's term).
  The changes telescope, so an episode's return is ``-K * J + K * w_loss * l_0`` (penalties aside): the
  users' objective up to a constant the policy cannot change, with a 20 % worse final loss costing like
  20 % (times ``w_loss``) however late it happened. Damage is still paid in the interval that does it (a
  dense signal, unlike one terminal reward), and a loss that recovers is refunded.
* ``"interval"``: ``w_loss * l_t`` every interval, the reward before issue 13's session 5. It charges damage
  done at interval t only in the intervals left, which makes compressing late in a run nearly free (issue
  13, session 4: the policy trained this way ended the H200 demo at rank 1-8 and 4.5-7.9 % above AdamW's
  loss).

Penalties (:class:`RewardConfig`): ``budget_penalty`` (+ ``budget_slope`` x overshoot) per interval whose
state exceeds the objective's memory budget, and ``divergence_penalty`` once when the loss exceeds
``divergence_factor * initial_loss`` (or is non-finite), which also ends the episode.

All functions take floats or numpy arrays (broadcasting), so the vectorized environment and the
single-episode environment compute bit-identical rewards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = [
    "LOSS_CREDITS",
    "TERM_NAMES",
    "RewardConfig",
    "episode_objective",
    "objective_cost",
    "penalized_reward",
    "reward_from_terms",
    "reward_terms",
]

#: Keys of the raw terms in ``info`` (and in recorded traces).
TERM_NAMES: tuple[str, ...] = ("loss_term", "memory_term", "energy_term", "time_term")

#: Values of :attr:`RewardConfig.loss_credit` (module docstring).
LOSS_CREDITS: tuple[str, ...] = ("final", "interval")


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
    :ivar loss_credit: ``"final"`` (default): each interval pays the change of the loss term times the
        episode's intervals, so the return's loss part is the final loss's (module docstring);
        ``"interval"``: each interval pays its own loss term (the per-interval sum of earlier sessions).
    """

    budget_penalty: float = 1.0
    budget_slope: float = 2.0
    divergence_penalty: float = 10.0
    divergence_factor: float = 3.0
    loss_credit: Literal["final", "interval"] = "final"

    def __post_init__(self) -> None:
        if min(self.budget_penalty, self.divergence_penalty, self.budget_slope) < 0:
            raise ValueError("budget_penalty, budget_slope and divergence_penalty must be >= 0")
        if self.loss_credit not in LOSS_CREDITS:
            raise ValueError(f"loss_credit={self.loss_credit!r}; choose one of {LOSS_CREDITS}")
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
    prev_loss_term: Any = 0.0,
    intervals: Any = 1,
) -> tuple[Any, Any, Any]:
    """``(reward, over_budget, diverged)``: :func:`reward_from_terms` minus the penalties of ``config``.

    ``budget_bytes`` of 0 means no budget; with one, the memory term leaves the weighted sum (memory is a
    constraint) and an over-budget interval pays ``budget_penalty + budget_slope * overshoot``. Works
    elementwise on arrays (the vectorized env) and on floats. With ``loss_credit="final"`` the loss part is
    ``intervals * w_loss * (l_t - prev_loss_term)``: ``prev_loss_term`` is the previous interval's loss term
    (the warm-up interval's before the first step), ``intervals`` the episode's control intervals ``K``.
    """
    w = np.array(weights, dtype=np.float64, copy=True)
    budget = np.asarray(budget_bytes, dtype=np.float64)
    has_budget = budget > 0
    w[..., 1] = np.where(has_budget, 0.0, w[..., 1])
    if config.loss_credit == "final":
        l_t = np.asarray(terms[0], dtype=np.float64)
        step = l_t - np.asarray(prev_loss_term, dtype=np.float64)
        paid = np.asarray(intervals, dtype=np.float64) * np.where(np.isfinite(step), step, 0.0)
        reward = reward_from_terms(w, (paid, terms[1], terms[2], terms[3]))
    else:
        reward = reward_from_terms(w, terms)
    sb = np.asarray(state_bytes, dtype=np.float64)
    over = has_budget & (sb > budget)
    overshoot = np.where(over, sb / np.where(has_budget, budget, 1.0) - 1.0, 0.0)
    loss_a = np.asarray(loss, dtype=np.float64)
    diverged = ~np.isfinite(loss_a) | (loss_a > config.divergence_factor * np.asarray(initial_loss))
    reward = reward - (config.budget_penalty + config.budget_slope * overshoot) * over
    reward = reward - config.divergence_penalty * diverged
    return reward, over, diverged


def objective_cost(
    weights: Any,
    loss_rel: Any,
    memory: Any,
    energy: Any,
    time: Any,
    *,
    state_bytes: Any = None,
    budget_bytes: Any = None,
) -> Any:
    """The users' scalar objective ``J`` of a whole run (lower is better): the one function the demo's
    verdict, ``mango eval`` and ``mango train``'s checkpoint selection score runs with.

    ``J = w_loss*loss_rel + w_memory*memory + w_energy*energy + w_time*time``: ``loss_rel`` is the run's
    *final* loss relative to the uncompressed run's at the same step (0.2 = 20 % worse), ``memory``,
    ``energy`` and ``time`` its mean state bytes, energy and wall time as ratios to the uncompressed run's
    (AdamW's own ``J`` is ``w_memory + w_energy + w_time``). ``weights`` is ``[..., 4]``. With a memory
    budget (``budget_bytes`` > 0, compared with ``state_bytes``, the run's mean state) memory is a
    constraint: it leaves ``J``, and a run that breaks the budget is infeasible (``inf``). Broadcasts.
    """
    w = np.asarray(weights, dtype=np.float64)
    j = reward_from_terms(w, (loss_rel, memory, energy, time))
    cost = -np.asarray(j, dtype=np.float64)
    if budget_bytes is None or state_bytes is None:
        return cost
    budget = np.asarray(budget_bytes, dtype=np.float64)
    has_budget = budget > 0
    cost = np.where(has_budget, cost + w[..., 1] * np.asarray(memory, dtype=np.float64), cost)
    return np.where(has_budget & (np.asarray(state_bytes, dtype=np.float64) > budget), np.inf, cost)


def episode_objective(
    weights: Any,
    final_loss_term: Any,
    mean_terms: Any,
    *,
    diverged: Any = False,
    config: RewardConfig | None = None,
    mean_state_bytes: Any = None,
    budget_bytes: Any = None,
) -> Any:
    """:func:`objective_cost` of environment episodes: ``final_loss_term`` is the last interval's ``l_T``,
    ``mean_terms`` ``[..., 4]`` the per-interval means of the four terms (the loss mean is not used). A
    diverged episode pays ``config.divergence_penalty`` on top, with a non-finite ``l_T`` read as
    ``divergence_factor - 1`` (the divergence threshold)."""
    cfg = config or RewardConfig()
    t = np.asarray(mean_terms, dtype=np.float64)
    l_t = np.asarray(final_loss_term, dtype=np.float64)
    l_t = np.where(np.isfinite(l_t), l_t, cfg.divergence_factor - 1.0)
    cost = objective_cost(
        weights,
        l_t,
        t[..., 1],
        t[..., 2],
        t[..., 3],
        state_bytes=mean_state_bytes,
        budget_bytes=budget_bytes,
    )
    return cost + cfg.divergence_penalty * np.asarray(diverged, dtype=np.float64)
