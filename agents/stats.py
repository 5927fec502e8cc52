"""Statistics shared by ``mango eval`` and ``mango train``'s validation: confidence intervals and the floor.

The floor of issue 13: a learned policy must not be worse than the fixed ``r0/b8/g0`` beyond the 95 %
confidence interval on any workload and objective preset. On the same episodes the comparison is paired:
a cell fails when the whole 95 % CI of the per-episode difference (policy - r0/b8/g0) lies below 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["FLOOR_SETTING", "FloorCell", "floor_cell", "mean_ci"]

#: The fixed setting of the floor (``client.controllers.StaticController``'s default).
FLOOR_SETTING = "r0/b8/g0"


def mean_ci(x: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of its ``level`` confidence interval (Student t over the samples)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    if n < 2:
        return float(x.mean()) if n else math.nan, math.nan
    from scipy import stats

    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return float(x.mean()), half


@dataclass(frozen=True)
class FloorCell:
    """One workload x preset cell of the floor check: the paired difference policy - r0/b8/g0."""

    diff: float  # mean paired return difference (positive: the policy is better)
    ci: float  # half-width of its 95 % CI (nan with one episode)
    rel: float  # relative to r0/b8/g0's mean return on the workload

    @property
    def fails(self) -> bool:
        """Worse than r0/b8/g0 beyond the 95 % CI: the whole CI of the paired difference is below 0."""
        return self.diff + (self.ci if math.isfinite(self.ci) else 0.0) < 0.0


def floor_cell(policy_returns: np.ndarray, floor_returns: np.ndarray) -> FloorCell:
    """The :class:`FloorCell` of a policy's and r0/b8/g0's returns on the same episodes (same order)."""
    a = np.asarray(policy_returns, dtype=np.float64)
    b = np.asarray(floor_returns, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired returns must have one shape, got {a.shape} and {b.shape}")
    m, h = mean_ci(a - b)
    base = float(b.mean())
    return FloorCell(diff=m, ci=h, rel=(float(a.mean()) - base) / max(abs(base), 1e-12))
