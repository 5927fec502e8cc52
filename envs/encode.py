"""Batched, pure-numpy twin of :meth:`client.protocol.ObservationSpec.encode` for the vectorized surrogate.

``ObservationSpec.encode`` is THE observation function; this module exists only because building pydantic
records per step caps a vectorized environment at a few thousand steps per second. :class:`BatchEncoder`
keeps a rolling window of already-encoded token rows for ``n`` episodes and appends one row per step, doing
the same float64 arithmetic and the same float32 rounding and clipping as the reference, so its output is
bit-identical (``tests/envs/test_encode.py`` checks that on random telemetry).

The subtle parts it reproduces:

* the loss columns (``loss_win``, ``loss_std_win``, ``loss_delta``) are relative to the oldest loss in the
  window, which moves with every record, so they are recomputed for the whole window from the raw losses
  kept beside the tokens; ``loss_delta`` of the oldest row is 0 (the reference diffs within the window);
* padding rows (short histories) are all zero, mask included;
* objective features: float32 weights divided by their float32 sum, budget over dense state bytes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from client.protocol import ActionGrid, CostProfile, Objective, ObservationSpec

__all__ = ["BatchEncoder", "objective_features", "objective_features_batch"]

# Column indices of ObservationSpec.TOKEN_FEATURES (asserted at import so a spec change fails loudly here).
_F = {name: i for i, name in enumerate(ObservationSpec.TOKEN_FEATURES)}
assert (_F["mask"], _F["loss_win"], _F["loss_std_win"], _F["loss_delta"], len(_F)) == (0, 1, 2, 15, 16), (
    "ObservationSpec changed: update encode"
)


_N_JOB = len(ObservationSpec.OBJECTIVE_FEATURES)
_N_HW = len(ObservationSpec.PROFILE_FEATURES)


def objective_features(
    objective: Objective, dense_state_bytes: int, profile: CostProfile | None = None
) -> np.ndarray:
    """The job block of an observation (float32 ``[len(OBJECTIVE_FEATURES)]``: the objective, then the cost
    profile's features or zeros), as ``ObservationSpec.encode`` builds it."""
    w = objective.normalized()
    budget = objective.memory_budget_bytes
    hw = profile.features() if profile is not None else [0.0] * _N_HW
    out = np.array(
        [*w, (budget / dense_state_bytes) if budget else 0.0, 1.0 if budget else 0.0, *hw], dtype=np.float32
    )
    return np.clip(out, -ObservationSpec.CLIP, ObservationSpec.CLIP)


def objective_features_batch(
    weights: np.ndarray,
    budget_bytes: np.ndarray,
    dense_state_bytes: np.ndarray,
    profile_features: np.ndarray | None = None,
) -> np.ndarray:
    """Vectorized :func:`objective_features`: ``weights`` float64 ``[n, 4]``, ``budget_bytes`` int64 ``[n]``
    (0 = no budget), ``dense_state_bytes`` int64 ``[n]``, ``profile_features`` float64 ``[n, F]`` (the
    unclipped :meth:`CostProfile.features`; ``None``: no profile) -> float32 ``[n, len(OBJECTIVE_FEATURES)]``,
    clipped like the spec."""
    w32 = np.asarray(weights, dtype=np.float64).astype(np.float32)  # Objective.weights(): float32 of floats
    # the reference sums 4 float32 values left to right in float32; do exactly that
    s = ((w32[:, 0] + w32[:, 1]) + w32[:, 2]) + w32[:, 3]
    out = np.zeros((w32.shape[0], _N_JOB), dtype=np.float32)
    out[:, :4] = w32 / s[:, None]
    has = budget_bytes > 0
    out[:, 4] = np.where(has, budget_bytes / np.maximum(dense_state_bytes, 1), 0.0).astype(np.float32)
    out[:, 5] = has
    if profile_features is not None:
        out[:, 6:] = np.asarray(profile_features, dtype=np.float64).astype(np.float32)
    np.clip(out, -ObservationSpec.CLIP, ObservationSpec.CLIP, out=out)
    return out


class BatchEncoder:
    """Rolling-window observation encoder for ``n`` episodes (see the module docstring).

    Usage per vectorized step: :meth:`clear` the rows of episodes that (auto)reset, :meth:`push` one record's
    raw values for every episode, then :meth:`observe`.

    :param n: number of episodes encoded side by side.
    :param spec: the observation spec (window, grid); its ``size`` is the observation length.
    """

    def __init__(self, n: int, spec: ObservationSpec) -> None:
        self.n = n
        self.spec = spec
        self.window = spec.window
        self.tokens = np.zeros((n, spec.window, spec.token_dim), dtype=np.float32)  # (N, W, 16)
        self.loss = np.zeros((n, spec.window), dtype=np.float64)  # raw losses of the window rows
        self.loss_std = np.zeros((n, spec.window), dtype=np.float64)
        self.valid = np.zeros((n, spec.window), dtype=bool)
        self.objective = np.zeros((n, spec.objective_dim), dtype=np.float32)
        grid: ActionGrid = spec.grid
        nr, nb = len(grid.ranks) - 1, len(grid.bits) - 1
        self._rank_feat = np.arange(len(grid.ranks), dtype=np.float64) / max(nr, 1)
        self._bits_feat = np.arange(len(grid.bits), dtype=np.float64) / max(nb, 1)
        self._gammas = np.asarray(grid.gammas, dtype=np.float64)

    def clear(self, idx: np.ndarray | slice, objective_rows: np.ndarray | None = None) -> None:
        """Empty the history of episodes ``idx`` (and set their job features, float32 ``[k, F]``)."""
        self.tokens[idx] = 0.0
        self.loss[idx] = 0.0
        self.loss_std[idx] = 0.0
        self.valid[idx] = False
        if objective_rows is not None:
            self.objective[idx] = objective_rows

    def push(
        self,
        idx: np.ndarray | None = None,
        *,
        loss: np.ndarray,
        loss_std: np.ndarray,
        grad_norm: np.ndarray,
        compression_error: np.ndarray,
        grad_kurtosis: np.ndarray,
        spectral_tail: np.ndarray,
        state_bytes: np.ndarray,
        energy_j: np.ndarray,
        interval_s: np.ndarray,
        log_lr: np.ndarray,
        progress: np.ndarray,
        action: np.ndarray,
        dense_state_bytes: np.ndarray,
        ref_energy_j: np.ndarray,
        ref_interval_s: np.ndarray,
    ) -> None:
        """Append one record to each episode of ``idx`` (default: all ``n``); arrays are ``[len(idx)]``.

        ``action`` is int ``[k, 3]`` grid indices; ``log_lr`` the precomputed ``log10(max(lr, 1e-12)) / 10``
        (see :meth:`log_lr_feature`); every other value is raw, in the units of
        :class:`client.protocol.TelemetryRecord`.
        """
        sl: Any = slice(None) if idx is None else idx
        k = self.n if idx is None else len(idx)
        t = self.tokens
        if idx is None:  # in place: no fancy-index copies on the hot path
            t[:, :-1] = t[:, 1:]
            self.loss[:, :-1] = self.loss[:, 1:]
            self.loss_std[:, :-1] = self.loss_std[:, 1:]
            self.valid[:, :-1] = self.valid[:, 1:]
        else:
            t[sl, :-1] = t[sl, 1:]
            self.loss[sl, :-1] = self.loss[sl, 1:]
            self.loss_std[sl, :-1] = self.loss_std[sl, 1:]
            self.valid[sl, :-1] = self.valid[sl, 1:]
        self.loss[sl, -1] = loss
        self.loss_std[sl, -1] = loss_std
        self.valid[sl, -1] = True
        row = np.empty((k, self.spec.token_dim), dtype=np.float64)
        row[:, 0] = 1.0
        row[:, 1:3] = 0.0  # the loss columns: filled for the whole window below
        row[:, 3] = np.log1p(grad_norm)
        row[:, 4] = compression_error
        row[:, 5] = np.log1p(np.maximum(grad_kurtosis, 0.0))
        row[:, 6] = spectral_tail
        row[:, 7] = state_bytes / dense_state_bytes
        row[:, 8] = energy_j / ref_energy_j
        row[:, 9] = interval_s / ref_interval_s
        row[:, 10] = log_lr
        row[:, 11] = progress
        row[:, 12] = self._rank_feat[action[:, 0]]
        row[:, 13] = self._bits_feat[action[:, 1]]
        row[:, 14] = self._gammas[action[:, 2]]
        row[:, 15] = 0.0
        last = row.astype(np.float32)
        np.clip(last, -self.spec.CLIP, self.spec.CLIP, out=last)
        t[sl, -1] = last
        self._loss_columns(sl)

    def _loss_columns(self, sl: Any) -> None:
        """Recompute the loss columns of every valid row of episodes ``sl`` against the window's oldest loss
        (``max(|loss|, 1e-6)`` of the first valid row), in the reference's float64 arithmetic."""
        loss, valid = self.loss[sl], self.valid[sl]
        first = valid.argmax(axis=1)  # the oldest valid row (rows fill from the back)
        base = np.abs(loss[np.arange(loss.shape[0]), first])
        base = np.where(base > 1e-6, base, 1e-6)[:, None]
        cols = np.empty((*loss.shape, 3), dtype=np.float64)
        cols[..., 0] = loss / base
        cols[..., 1] = self.loss_std[sl] / base
        delta = np.zeros_like(loss)
        delta[:, 1:] = (loss[:, 1:] - loss[:, :-1]) / base
        delta[np.arange(loss.shape[0]), first] = 0.0  # the oldest row diffs against itself
        cols[..., 2] = delta
        out = cols.astype(np.float32)
        np.clip(out, -self.spec.CLIP, self.spec.CLIP, out=out)
        out[~valid] = 0.0  # padding rows stay all zero
        self.tokens[sl, :, 1:3] = out[..., :2]
        self.tokens[sl, :, 15] = out[..., 2]

    @staticmethod
    def log_lr_feature(lr: float) -> float:
        """The ``log_lr`` token feature exactly as the reference computes it (``math``, not numpy)."""
        return math.log10(max(lr, 1e-12)) / 10.0

    def observe(self, out: np.ndarray | None = None) -> np.ndarray:
        """Observations float32 ``[n, spec.size]`` (a new array unless ``out`` is given)."""
        n_tok = self.window * self.spec.token_dim
        if out is None:
            out = np.empty((self.n, self.spec.size), dtype=np.float32)
        out[:, :n_tok] = self.tokens.reshape(self.n, n_tok)
        out[:, n_tok:] = self.objective
        return out
