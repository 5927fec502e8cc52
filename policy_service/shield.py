"""The safety shield: overrides a policy's choice that would break a hard constraint, and says why.

Three rules, applied after every policy (learned or heuristic) decides:

1. **Divergence back-off.** The loss is diverging when the newest record's loss exceeds the window's minimum
   (of the earlier records) by more than ``loss_rise_frac`` of the loss scale (the reference's initial loss
   when the request has one, else that minimum's magnitude), or when the newest interval skipped updates for
   non-finite gradients. If the policy then keeps or increases compression (predicted state bytes not above
   the current setting's), the shield backs off to the least compressed setting the memory budget allows
   (``CompressionSetting.off()`` without a budget): compression error is the usual cause and more of it only
   makes things worse.
2. **Memory budget.** If ``objective.memory_budget_bytes`` is set and the chosen setting's predicted state
   bytes times ``1 + memory_margin_frac`` exceed it, the shield picks the least compressed grid setting that
   fits (the smallest one if none does, and says so).

3. **Step-time budget** (issue 13). If ``objective.max_step_time_ratio`` is set and the request carries the
   job's :class:`~client.protocol.CostProfile`, a setting whose *measured* optimizer step time on the job's
   hardware exceeds the budget times AdamW's is refused: the shield picks, among the settings that fit both
   budgets, the one nearest the refused choice in kept state (its memory intent), more bits first
   (``CompressionSetting.off()`` runs at AdamW speed by definition, so something always fits).

Predicting state bytes (:func:`estimate_state_bytes`): the client's byte model of ``MangoAdamW``
(:func:`client.compression.sizes.bytes_per_param`: per parameter of a typical square matrix) is calibrated on
the newest record. With the request's ``Reference`` (dense bytes known), the fraction of state kept
uncompressed (1-D and small tensors stay fp32) is solved from the newest record's ``state_bytes``; without it,
the model is scaled to match the newest record. Tuning: raise ``memory_margin_frac`` if jobs report
``state_bytes`` above the budget after a shielded decision; lower ``matrix_side`` for narrow models (it sets
how much a rank-r projection saves: ``r / matrix_side``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from client.compression.sizes import DENSE_BYTES_PER_PARAM, bytes_per_param
from client.protocol import ActionGrid, CompressionSetting, DecideRequest

# bytes_per_param lives with the byte model (client.compression.sizes); re-exported for the shield's callers.
__all__ = ["Shield", "ShieldConfig", "ShieldResult", "bytes_per_param", "estimate_state_bytes"]


def _ratio(setting: CompressionSetting, matrix_side: int) -> float:
    return bytes_per_param(setting, matrix_side) / DENSE_BYTES_PER_PARAM


def _fidelity(setting: CompressionSetting, matrix_side: int) -> float:
    """How much of the state a setting keeps (rank and bits only); higher = less compressed."""
    return bytes_per_param(setting, matrix_side, with_shift=False)


def estimate_state_bytes(
    setting: CompressionSetting,
    dense_state_bytes: int,
    *,
    uncompressed_frac: float = 0.0,
    matrix_side: int = 1024,
) -> int:
    """Predicted state bytes of ``setting`` for a job whose plain AdamW state is ``dense_state_bytes``.

    ``uncompressed_frac`` is the share of the dense state that never compresses (1-D and small tensors);
    the rest scales by :func:`bytes_per_param` / 8.
    """
    u = min(max(uncompressed_frac, 0.0), 1.0)
    return math.ceil(dense_state_bytes * (u + (1.0 - u) * _ratio(setting, matrix_side)))


@dataclass(frozen=True)
class ShieldConfig:
    """Knobs of :class:`Shield` (``MANGO_SHIELD_*`` settings).

    :param loss_rise_frac: divergence threshold; 0.2 = the newest loss is 20% of the loss scale above the
        window's best. Lower it for smooth losses, raise it for noisy small-batch jobs.
    :param memory_margin_frac: safety margin on predicted bytes (0.05 = 5%).
    :param matrix_side: typical matrix side for the low-rank saving ``r / matrix_side``.
    :param default_uncompressed_frac: uncompressed share assumed when it cannot be solved from the request.
    """

    loss_rise_frac: float = 0.2
    memory_margin_frac: float = 0.05
    matrix_side: int = 1024
    default_uncompressed_frac: float = 0.0


@dataclass(frozen=True)
class ShieldResult:
    """The (possibly overridden) setting; ``rules`` names each rule that fired (``memory_budget``,
    ``divergence``), ``reason`` explains in one line."""

    setting: CompressionSetting
    shielded: bool
    reason: str
    rules: tuple[str, ...] = ()


class _BytesModel:
    """Predicted state bytes of any setting for one request, calibrated on its newest record."""

    def __init__(self, request: DecideRequest, cfg: ShieldConfig) -> None:
        self.side = cfg.matrix_side
        latest = request.history[-1]
        observed = latest.state_bytes
        r_latest = _ratio(latest.setting, self.side)
        self.usable = observed > 0 or request.reference is not None
        if request.reference is not None:
            self.dense = float(request.reference.dense_state_bytes)
            u = cfg.default_uncompressed_frac
            if observed > 0 and r_latest < 0.999:
                # observed / dense = u + (1 - u) * r_latest  ->  solve for u
                u = (observed / self.dense - r_latest) / (1.0 - r_latest)
            self.u = min(max(u, 0.0), 1.0)
        else:
            u = cfg.default_uncompressed_frac
            self.u = u
            self.dense = observed / (u + (1.0 - u) * r_latest) if observed > 0 else 0.0

    def __call__(self, setting: CompressionSetting) -> float:
        return self.dense * (self.u + (1.0 - self.u) * _ratio(setting, self.side))


@functools.lru_cache(maxsize=16)
def _grid_settings(grid: ActionGrid) -> tuple[CompressionSetting, ...]:
    return tuple(grid.all_settings())


def _mb(n: float) -> str:
    return f"{n / 1e6:.3g} MB"


class Shield:
    """Applies the two rules of the module docstring to a policy's choice. Stateless and thread-safe."""

    def __init__(self, config: ShieldConfig | None = None) -> None:
        self.config = config or ShieldConfig()

    def diverging(self, request: DecideRequest) -> str | None:
        """Why the window looks divergent (``None`` if it does not)."""
        hist = request.history
        latest = hist[-1]
        if latest.skipped_steps > 0:
            return f"newest interval skipped {latest.skipped_steps} updates for non-finite gradients"
        if len(hist) < 2:
            return None
        best = hist[0].loss  # min() over the earlier records, without a generator (this runs per request)
        for r in hist[1:-1]:
            if r.loss < best:
                best = r.loss
        scale = request.reference.initial_loss if request.reference is not None else max(abs(best), 1e-12)
        rise = (latest.loss - best) / scale
        if rise > self.config.loss_rise_frac:
            return (
                f"loss rose {rise:.0%} of its scale over the window "
                f"({best:.4g} -> {latest.loss:.4g}; threshold {self.config.loss_rise_frac:.0%})"
            )
        return None

    def check(self, chosen: CompressionSetting, request: DecideRequest, grid: ActionGrid) -> ShieldResult:
        """Return ``chosen`` unchanged, or the override with the rules that fired and why."""
        cfg = self.config
        budget = request.objective.memory_budget_bytes
        profile = request.profile
        max_ratio = request.objective.max_step_time_ratio
        why = self.diverging(request)
        if why is None and budget is None and (profile is None or max_ratio is None):
            return ShieldResult(setting=chosen, shielded=False, reason="")  # no rule can fire: no byte model
        model = _BytesModel(request, cfg)
        limit = budget / (1.0 + cfg.memory_margin_frac) if budget is not None else math.inf
        rules: list[str] = []
        reasons: list[str] = []
        setting = chosen

        if why is not None:
            current = request.history[-1].setting
            keeps_compressing = _fidelity(setting, cfg.matrix_side) <= _fidelity(current, cfg.matrix_side)
            if keeps_compressing and not setting.is_off:
                # Without a usable byte model every setting "fits" (model == 0) and this is the grid's
                # least compressed point, CompressionSetting.off() on the default grid.
                safe = self._least_compressed(grid, model, limit, prefer_gamma=0.0) or setting
                if safe != setting:
                    rules.append("divergence")
                    reasons.append(f"{why}; backed off {setting.label()} -> {safe.label()}")
                    setting = safe

        if budget is not None and model.usable:
            predicted = model(setting)
            if predicted > limit:
                fit = self._least_compressed(grid, model, limit, prefer_gamma=setting.gamma)
                if fit is None:
                    fit = min(_grid_settings(grid), key=lambda s: (model(s), -s.bits))
                    note = f"no grid setting fits; chose the smallest, {fit.label()} (~{_mb(model(fit))})"
                else:
                    note = f"chose {fit.label()} (~{_mb(model(fit))})"
                rules.append("memory_budget")
                reasons.append(
                    f"memory budget {_mb(budget)}: {setting.label()} would hold ~{_mb(predicted)} "
                    f"(margin {cfg.memory_margin_frac:.0%}); {note}"
                )
                setting = fit

        if profile is not None and max_ratio is not None and profile.step_ratio(setting) > max_ratio:
            ratio = profile.step_ratio(setting)

            def fits(s: CompressionSetting) -> bool:
                return (s.is_off or profile.step_ratio(s) <= max_ratio) and model(s) <= limit

            # the fitting setting nearest the policy's choice in kept state (its memory intent); more bits
            side = cfg.matrix_side
            want = math.log(_fidelity(setting, side))
            ok = [s for s in _grid_settings(grid) if fits(s)]
            fast = (
                min(ok, key=lambda s: (round(abs(math.log(_fidelity(s, side)) - want), 6), -s.bits, s.gamma))
                if ok
                else CompressionSetting.off()
            )
            rules.append("step_time")
            reasons.append(
                f"step-time budget {max_ratio:.2f}x AdamW on {profile.device}: {setting.label()} "
                f"{profile.source} {ratio:.2f}x; chose {fast.label()} ({profile.step_ratio(fast):.2f}x)"
            )
            setting = fast

        if not rules:
            return ShieldResult(setting=chosen, shielded=False, reason="")
        return ShieldResult(
            setting=setting, shielded=True, reason="shield: " + "; ".join(reasons), rules=tuple(rules)
        )

    def _least_compressed(
        self, grid: ActionGrid, model: _BytesModel, limit: float, prefer_gamma: float
    ) -> CompressionSetting | None:
        """The fitting grid setting of highest fidelity (ties: more bits, more rank, gamma nearest
        ``prefer_gamma``); ``None`` if nothing fits."""
        side = self.config.matrix_side
        best: CompressionSetting | None = None
        best_key: tuple[float, ...] = ()
        for s in _grid_settings(grid):
            if model(s) > limit:
                continue
            key = (round(_fidelity(s, side), 6), s.bits, s.rank or math.inf, -abs(s.gamma - prefer_gamma))
            if best is None or key > best_key:
                best, best_key = s, key
        return best
