"""Objective weights per episode: named presets and a seeded sampler.

The reward is ``r_t = -(w_loss*l_t + w_memory*m_t + w_energy*e_t + w_time*tau_t)`` (see :mod:`envs.reward`),
with ``l_t`` an *excess loss relative to the uncompressed run's loss at the same step* (0.2 = 20 % worse;
typically 0.001-0.1) and ``m_t, e_t, tau_t``
*ratios to the uncompressed run* (typically 0.1-1.5). The presets are scaled for those units: a loss weight
of 10 makes 1 % of excess loss cost as much as 10 % of the dense state memory.

Sampling (:class:`ObjectiveSampler`): with probability ``preset_prob`` a preset, otherwise random weights -
``w_loss`` log-uniform in ``loss_range``, each other weight log-uniform in ``other_range`` and dropped to 0
with probability ``zero_prob`` - so one policy learns the whole trade-off surface. With probability
``budget_prob`` the objective also carries a memory budget of ``budget_rel_range`` times the dense state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from client.protocol import Objective

__all__ = ["OBJECTIVE_PRESETS", "ObjectiveSampler", "make_objective", "preset"]

#: name -> (w_loss, w_memory, w_energy, w_time); units as in the module docstring.
OBJECTIVE_PRESETS: dict[str, tuple[float, float, float, float]] = {
    "loss-first": (20.0, 0.1, 0.05, 0.05),
    "memory-first": (2.0, 1.0, 0.05, 0.05),
    "energy-first": (2.0, 0.05, 1.0, 0.1),
    "time-first": (2.0, 0.05, 0.1, 1.0),
    "balanced": (5.0, 0.5, 0.25, 0.25),
}


def preset(name: str, memory_budget_bytes: int | None = None) -> Objective:
    """The :class:`Objective` of a preset; ``ValueError`` lists the names."""
    try:
        w = OBJECTIVE_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown objective preset {name!r}; known: {sorted(OBJECTIVE_PRESETS)}") from None
    return make_objective(w, memory_budget_bytes)


def make_objective(
    weights: tuple[float, float, float, float] | np.ndarray, memory_budget_bytes: int | None = None
) -> Objective:
    """An :class:`Objective` from four weights (loss, memory, energy, time); all zero is a ValueError."""
    w = [float(x) for x in np.asarray(weights, dtype=np.float64).reshape(-1)]
    if len(w) != 4:
        raise ValueError(f"objective needs 4 weights (loss, memory, energy, time), got {len(w)}")
    return Objective(
        w_loss=w[0], w_memory=w[1], w_energy=w[2], w_time=w[3], memory_budget_bytes=memory_budget_bytes
    )


@dataclass(frozen=True)
class ObjectiveSampler:
    """Seeded per-episode objective sampler (see the module docstring).

    :ivar preset_prob: probability of drawing a named preset (uniformly among ``presets``).
    :ivar presets: preset names to draw from (default: all of :data:`OBJECTIVE_PRESETS`).
    :ivar loss_range: log-uniform range of ``w_loss`` for random objectives.
    :ivar other_range: log-uniform range of each other weight.
    :ivar zero_prob: probability that each non-loss weight is exactly zero.
    :ivar budget_prob: probability that the objective carries a memory budget.
    :ivar budget_rel_range: budget as a fraction of the dense (fp32 AdamW) state bytes, uniform in the range.
    """

    preset_prob: float = 0.3
    presets: tuple[str, ...] = tuple(OBJECTIVE_PRESETS)
    loss_range: tuple[float, float] = (0.5, 50.0)
    other_range: tuple[float, float] = (0.02, 2.0)
    zero_prob: float = 0.25
    budget_prob: float = 0.15
    budget_rel_range: tuple[float, float] = (0.15, 0.8)

    def __post_init__(self) -> None:
        for p, n in ((self.preset_prob, "preset_prob"), (self.zero_prob, "zero_prob")):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{n}={p} must lie in [0, 1]")
        if not 0.0 <= self.budget_prob <= 1.0:
            raise ValueError(f"budget_prob={self.budget_prob} must lie in [0, 1]")
        for name in self.presets:
            if name not in OBJECTIVE_PRESETS:
                raise ValueError(f"unknown objective preset {name!r}; known: {sorted(OBJECTIVE_PRESETS)}")
        for lo, hi in (self.loss_range, self.other_range):
            if not 0.0 < lo <= hi:
                raise ValueError(f"weight range ({lo}, {hi}) must satisfy 0 < lo <= hi")

    def sample_weights(self, rng: np.random.Generator) -> tuple[np.ndarray, float | None]:
        """Draw ``(weights float64[4], budget_rel or None)``; a fixed number of draws per call."""
        u = rng.random(8)  # fixed draw count keeps streams aligned across backends
        if self.presets and u[0] < self.preset_prob:
            name = self.presets[min(int(u[1] * len(self.presets)), len(self.presets) - 1)]
            w = np.array(OBJECTIVE_PRESETS[name], dtype=np.float64)
        else:
            llo, lhi = np.log(self.loss_range)
            olo, ohi = np.log(self.other_range)
            w = np.empty(4, dtype=np.float64)
            w[0] = np.exp(llo + (lhi - llo) * u[1])
            w[1:] = np.exp(olo + (ohi - olo) * u[2:5])
            w[1:][u[5:8] < self.zero_prob] = 0.0
        budget = None
        b = rng.random(2)
        if b[0] < self.budget_prob:
            lo, hi = self.budget_rel_range
            budget = float(lo + (hi - lo) * b[1])
        return w, budget

    def sample(self, rng: np.random.Generator, dense_state_bytes: int) -> Objective:
        """Draw an :class:`Objective` for a job whose dense state is ``dense_state_bytes``."""
        w, budget = self.sample_weights(rng)
        return make_objective(w, None if budget is None else max(1, int(budget * dense_state_bytes)))
