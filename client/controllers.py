"""Heuristic controllers: history + objective -> setting.

They are the client's fallback when the policy service is unreachable, the service's always-available
policies, and the baselines the learned policy is measured against. Every controller implements
:class:`client.policy.Controller` (the one interface the learned policy shares); :func:`make_controller`
builds one by name. They read the telemetry window only, and ignore ``reference`` and ``profile``.

=================  ===========================================================================================
name               rule (one call per control interval; the newest record is ``history[-1]``)
=================  ===========================================================================================
``static``         always the same setting (the hand-tuned baseline)
``accordion``      relative change of the gradient norm between the last two intervals >= ``threshold``:
                   critical regime, low compression; else high compression (Accordion, Agarwal et al. 2021)
``loraven``        event-triggered rank control on ``compression_error`` with hysteresis; after a change it
                   holds for ``cooldown_intervals`` intervals (LoRAven seed, section 3.4)
``energy_aware``   mean power above ``budget_w``: one step harder along a ladder of settings; below
                   ``relax_fraction * budget_w``: one step lighter; in between: hold
``schedule``       a fixed sequence of settings by interval (:class:`Schedule`, ``"r0/b8/g0:1>r0/b4/g0"``):
                   an open-loop baseline, e.g. a gentler opening before the setting held after it
=================  ===========================================================================================

All controllers are cheap (a few float comparisons) and deterministic: the same sequence of calls gives the
same decisions. Stateful ones (``loraven``, ``energy_aware``) keep per-instance state (the level they last
chose and the interval it was chosen at), so use one instance per job; :meth:`Controller.reset` forgets it,
and a history whose newest step goes backwards (a new episode) resets it automatically. A fresh instance
starts its cooldown from the window itself (a setting change visible in the window counts), so one
instance per request in a stateless service still respects the cooldown, to the window's resolution.
Calling ``decide`` twice with the same newest step returns the same setting without advancing the
cooldown, so a retried request does not count as a new interval.

Every controller sets :attr:`Controller.reason` to a short human-readable explanation of its last decision
(it ends up in the service's ``Decision.reason`` and the client's decision log).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from client.compression.sizes import DENSE_BYTES_PER_PARAM, bytes_per_param
from client.policy.interface import Controller, ProfileFeatures
from client.protocol import (
    DEFAULT_GRID,
    ActionGrid,
    CompressionSetting,
    CostProfile,
    Objective,
    Reference,
    TelemetryRecord,
)

__all__ = [
    "ASSUMED_OPTIMIZER_SHARE",
    "DEFAULT_ENERGY_LADDER",
    "FIRST_CANDIDATES",
    "FIRST_MATRIX_SIDE",
    "HEURISTICS",
    "AccordionController",
    "Controller",
    "EnergyAwareController",
    "LoRAvenController",
    "RandomController",
    "Schedule",
    "ScheduleController",
    "StaticController",
    "first_setting",
    "first_setting_for_profile",
    "make_controller",
]


def _require_history(history: Sequence[TelemetryRecord], who: str) -> TelemetryRecord:
    if not history:
        raise ValueError(f"{who}.decide() got an empty history: pass at least one TelemetryRecord")
    return history[-1]


def _intervals_since_change(
    history: Sequence[TelemetryRecord], same: Callable[[TelemetryRecord], bool]
) -> int:
    """Records since the window shows a change (``same(rec)``: unchanged), ``-1`` when it shows none.

    With a decision applied at the boundary where it is made, this equals the intervals a stateful instance
    counts; with a service's one-interval lag it undercounts by one (errs towards holding).

    A fresh controller instance (e.g. one made per request in a stateless service) starts its cooldown from
    this, so it does not change again right after a change that the window already shows.
    """
    for n, rec in enumerate(reversed(history)):
        if not same(rec):
            return n
    return -1


#: :class:`StaticController`'s default, built once (the service makes a controller per request).
_STATIC_DEFAULT = CompressionSetting(rank=0, bits=8, gamma=0.0)


class StaticController(Controller):
    """Always returns the same setting (the hand-tuned baseline).

    :param setting: the setting to return; default ``r0/b8/g0``, the strong default measured in issue 13
        (8-bit block-wise state, no projection: within 1 % of AdamW's loss at ~3 B/param, and at fused-AdamW
        speed on a GPU; the former default r8/b8/g0 projects, which ran ~100x AdamW there).
    """

    name = "static"

    def __init__(self, setting: CompressionSetting | None = None) -> None:
        self.setting = setting or _STATIC_DEFAULT  # settings are frozen: instances may share one

    def decide(
        self,
        history: Sequence[TelemetryRecord],
        objective: Objective,
        *,
        reference: Reference | None = None,
        profile: ProfileFeatures | None = None,
    ) -> CompressionSetting:
        self.reason = f"static {self.setting.label()}"
        return self.setting


@dataclass(frozen=True)
class Schedule:
    """A fixed sequence of settings by control interval, written ``"A:k>B:m>C"``: setting ``A`` for the
    first ``k`` intervals, ``B`` for the next ``m``, then ``C`` to the end. A plain label (``"r0/b4/g0"``)
    is the schedule of one setting held throughout. Labels are canonical (:meth:`label`), so two spellings
    of one schedule compare equal.

    What it is for: an open-loop baseline beside the learned policy, e.g. ``"r0/b8/g0:1>r0/b4/g0"`` is the
    hand rule's 8-bit opening followed by the 4-bit setting the policy chose on the GPU, which tells how much
    of the policy's gain is the opening (``mango demo --static-setting``).
    """

    phases: tuple[tuple[CompressionSetting, int], ...]
    """``(setting, intervals)`` played in order before :attr:`final` (empty: :attr:`final` throughout)"""
    final: CompressionSetting

    @classmethod
    def parse(cls, spec: str) -> Schedule:
        """``"r0/b8/g0:1>r0/b4/g0"`` -> a schedule; ``ValueError`` names the part that does not parse."""
        parts = [p.strip() for p in spec.split(">")]
        phases = []
        for part in parts[:-1]:
            label, sep, count = part.partition(":")
            if not sep or not count.strip().isdigit() or int(count) < 1:
                raise ValueError(
                    f"schedule {spec!r}: {part!r} needs a count of intervals >= 1 (setting:k, as r0/b8/g0:1)"
                )
            phases.append((CompressionSetting.parse(label.strip()), int(count)))
        if ":" in parts[-1]:
            raise ValueError(f"schedule {spec!r}: the last setting {parts[-1]!r} holds to the end (no count)")
        return cls(tuple(phases), CompressionSetting.parse(parts[-1]))

    @classmethod
    def of(cls, setting: CompressionSetting) -> Schedule:
        """The schedule of one setting held throughout."""
        return cls((), setting)

    def label(self) -> str:
        """The canonical spelling, :meth:`parse`'s input."""
        return ">".join([*(f"{s.label()}:{k}" for s, k in self.phases), self.final.label()])

    @property
    def first(self) -> CompressionSetting:
        """The setting of the first interval."""
        return self.phases[0][0] if self.phases else self.final

    def settings(self) -> list[CompressionSetting]:
        """Every setting the schedule plays, in order, each once."""
        return list(dict.fromkeys([*(s for s, _ in self.phases), self.final]))

    def at(self, interval: int) -> CompressionSetting:
        """The setting of control interval ``interval`` (1 for the first)."""
        if interval < 1:
            raise ValueError(f"interval={interval}: intervals count from 1")
        end = 0
        for setting, k in self.phases:
            end += k
            if interval <= end:
                return setting
        return self.final


class ScheduleController(Controller):
    """Plays a :class:`Schedule`: the job starts at ``schedule.first`` (the optimizer's setting), and the
    decision after interval ``n`` is ``schedule.at(n + 1)``.

    It counts intervals by the newest record's step: a repeated step (a retried request) returns the same
    setting without advancing, and a step that goes backwards (a new episode) starts the schedule again.
    """

    name = "schedule"

    def __init__(self, schedule: Schedule | str) -> None:
        self.schedule = Schedule.parse(schedule) if isinstance(schedule, str) else schedule
        self.reset()

    def reset(self) -> None:
        self._intervals = 0  # intervals seen
        self._last_step: int | None = None

    def decide(
        self,
        history: Sequence[TelemetryRecord],
        objective: Objective,
        *,
        reference: Reference | None = None,
        profile: ProfileFeatures | None = None,
    ) -> CompressionSetting:
        step = _require_history(history, "ScheduleController").step
        if self._last_step is not None and step < self._last_step:
            self.reset()
        if step != self._last_step:
            self._intervals += 1
            self._last_step = step
        setting = self.schedule.at(self._intervals + 1)
        self.reason = f"schedule {self.schedule.label()}: interval {self._intervals + 1}"
        return setting


class AccordionController(Controller):
    """Accordion (Agarwal et al., MLSys 2021): spend bits only in critical learning regimes.

    The regime is detected from the mean gradient norm of the last two intervals,
    ``delta = |g_new - g_old| / g_old``. ``delta >= threshold`` is a critical regime (the gradient is changing
    fast; compression error there hurts the final accuracy): use ``low_compression``. Otherwise use
    ``high_compression``. With a single record (the first interval) the job is assumed critical.

    Stateless: the decision depends on the last two records only.

    :param threshold: relative gradient-norm change that marks a critical regime, > 0. Accordion's paper uses
        0.5 per epoch; per control interval (50 steps) changes are smaller, so 0.1-0.5 is the range to sweep.
        Lower: more intervals at low compression (safer, costlier).
    :param low_compression: setting for critical regimes; default ``r32/b8/g0``.
    :param high_compression: setting otherwise; default ``r4/b4/g0``.
    """

    name = "accordion"

    def __init__(
        self,
        threshold: float = 0.5,
        low_compression: CompressionSetting | None = None,
        high_compression: CompressionSetting | None = None,
    ) -> None:
        if not (math.isfinite(threshold) and threshold > 0.0):
            raise ValueError(f"threshold={threshold} must be a finite number > 0 (try 0.1-0.5)")
        self.threshold = float(threshold)
        self.low_compression = low_compression or CompressionSetting(rank=32, bits=8, gamma=0.0)
        self.high_compression = high_compression or CompressionSetting(rank=4, bits=4, gamma=0.0)

    def relative_change(self, history: Sequence[TelemetryRecord]) -> float:
        """``|g_new - g_old| / g_old`` over the last two records (``inf`` when undefined: critical)."""
        if len(history) < 2:
            return math.inf
        g_old, g_new = history[-2].grad_norm, history[-1].grad_norm
        if g_old <= 0.0:
            return 0.0 if g_new <= 0.0 else math.inf
        return abs(g_new - g_old) / g_old

    def decide(
        self,
        history: Sequence[TelemetryRecord],
        objective: Objective,
        *,
        reference: Reference | None = None,
        profile: ProfileFeatures | None = None,
    ) -> CompressionSetting:
        _require_history(history, type(self).__name__)
        delta = self.relative_change(history)
        if delta >= self.threshold:
            self.reason = f"accordion: critical regime (grad-norm change {delta:.3g} >= {self.threshold:g})"
            return self.low_compression
        self.reason = f"accordion: stable regime (grad-norm change {delta:.3g} < {self.threshold:g})"
        return self.high_compression


class LoRAvenController(Controller):
    """Event-triggered rank control (LoRAven seed, section 3.4): hold ``compression_error`` near a target.

    With ``e`` the newest record's ``compression_error``:

    * ``e > target_error * (1 + hysteresis)``: raise the rank one step along ``ranks`` (capped at the top);
    * ``e < target_error * (1 - hysteresis)``: lower it one step (floored at the bottom);
    * otherwise, or while the cooldown runs: hold.

    After a change, the next ``cooldown_intervals`` new intervals hold (the decision reaches the optimizer
    one boundary later, so the error it causes shows up one or two intervals after it is made; a cooldown
    >= 2 avoids reacting twice to the same event). Bits and gamma stay fixed.

    The rank in force is the one this instance chose last; before its first change, the newest record's rank
    (rank 0 - no projection - or a rank off the ladder starts at the top of the ladder).

    :param target_error: relative compression error to hold, > 0 (``||x - C(x)||^2 / ||x||^2``; 0.05-0.2 is
        typical at 8 bits). Lower: more rank, more memory.
    :param hysteresis: dead band as a fraction of the target, in [0, 1). Wider: fewer changes.
    :param cooldown_intervals: intervals held after a change, >= 0 (0: may change every interval).
    :param ranks: the ladder of ranks, ascending, each a positive grid rank; default ``1, 2, ..., 64``.
    :param bits: bits to pair with every rank; default 8.
    :param gamma: variance-reduction shift to pair with every rank; default 0.
    """

    name = "loraven"

    def __init__(
        self,
        target_error: float = 0.1,
        hysteresis: float = 0.25,
        cooldown_intervals: int = 2,
        ranks: Sequence[int] | None = None,
        bits: int = 8,
        gamma: float = 0.0,
    ) -> None:
        if not (math.isfinite(target_error) and target_error > 0.0):
            raise ValueError(f"target_error={target_error} must be a finite number > 0 (try 0.05-0.2)")
        if not (0.0 <= hysteresis < 1.0):
            raise ValueError(f"hysteresis={hysteresis} must lie in [0, 1) (try 0.1-0.3)")
        if cooldown_intervals < 0:
            raise ValueError(f"cooldown_intervals={cooldown_intervals} must be >= 0")
        ladder = tuple(sorted(r for r in DEFAULT_GRID.ranks if r > 0)) if ranks is None else tuple(ranks)
        if not ladder or list(ladder) != sorted(set(ladder)) or any(r <= 0 for r in ladder):
            raise ValueError(f"ranks={ranks} must be distinct positive ranks in ascending order")
        for r in ladder:  # validates each rank and the bits/gamma against the grid
            CompressionSetting(rank=r, bits=bits, gamma=gamma)
        self.target_error = float(target_error)
        self.hysteresis = float(hysteresis)
        self.cooldown_intervals = int(cooldown_intervals)
        self.ranks = ladder
        self.bits = int(bits)
        self.gamma = float(gamma)
        self.reset()

    def reset(self) -> None:
        self._level: int | None = None  # index into self.ranks of the rank in force
        self._last_step: int | None = None  # newest step seen (a repeat does not advance the cooldown)
        self._since_change: int = self.cooldown_intervals + 1  # intervals since the last change
        self._last_setting: CompressionSetting | None = None

    def _start_level(self, rec: TelemetryRecord) -> int:
        if rec.setting.rank in self.ranks:
            return self.ranks.index(rec.setting.rank)
        return len(self.ranks) - 1

    def decide(
        self,
        history: Sequence[TelemetryRecord],
        objective: Objective,
        *,
        reference: Reference | None = None,
        profile: ProfileFeatures | None = None,
    ) -> CompressionSetting:
        rec = _require_history(history, type(self).__name__)
        if self._last_step is not None and rec.step < self._last_step:
            self.reset()  # a new episode
        if self._last_step is not None and rec.step == self._last_step and self._last_setting is not None:
            return self._last_setting  # the same interval again: same answer, cooldown not advanced
        self._last_step = rec.step
        if self._level is None:
            self._level = self._start_level(rec)
            since = _intervals_since_change(history, lambda r: r.setting.rank == rec.setting.rank)
            if since >= 0:
                self._since_change = since
        else:
            self._since_change += 1
        e = rec.compression_error
        hi = self.target_error * (1.0 + self.hysteresis)
        lo = self.target_error * (1.0 - self.hysteresis)
        level = self._level
        if self._since_change <= self.cooldown_intervals:
            self.reason = f"loraven: cooldown ({self._since_change}/{self.cooldown_intervals} intervals)"
        elif e > hi and level < len(self.ranks) - 1:
            level += 1
            self.reason = f"loraven: error {e:.3g} > {hi:.3g}, rank up to {self.ranks[level]}"
        elif e < lo and level > 0:
            level -= 1
            self.reason = f"loraven: error {e:.3g} < {lo:.3g}, rank down to {self.ranks[level]}"
        else:
            self.reason = f"loraven: error {e:.3g} in band or at a ladder end, hold rank {self.ranks[level]}"
        if level != self._level:
            self._level = level
            self._since_change = 0
        self._last_setting = CompressionSetting(rank=self.ranks[level], bits=self.bits, gamma=self.gamma)
        return self._last_setting


#: Least to most compressed; each step down cuts state bytes (and the memory traffic that costs energy).
DEFAULT_ENERGY_LADDER: tuple[CompressionSetting, ...] = (
    CompressionSetting(rank=0, bits=32, gamma=0.0),
    CompressionSetting(rank=0, bits=16, gamma=0.0),
    CompressionSetting(rank=32, bits=8, gamma=0.0),
    CompressionSetting(rank=16, bits=8, gamma=0.0),
    CompressionSetting(rank=8, bits=4, gamma=0.0),
    CompressionSetting(rank=4, bits=4, gamma=0.25),
    CompressionSetting(rank=2, bits=2, gamma=0.5),
)


class EnergyAwareController(Controller):
    """Keep mean power under a budget by walking a ladder of settings (least to most compressed).

    Mean power ``p`` is averaged over the newest ``window`` records (each record's ``mean_power_w``, or
    ``energy_j / interval_s`` when the meter left power at 0):

    * ``p > budget_w``: one step harder (towards the end of ``ladder``);
    * ``p < relax_fraction * budget_w``: one step lighter;
    * in between, during the cooldown, or with no energy figure at all: hold.

    **Modelled energy.** Records whose ``energy_source`` is ``"modelled"`` carry an estimate (no GPU meter).
    With ``use_modelled=True`` (default) they count like measured ones (the estimate still ranks settings
    correctly, so the controller stays useful in CPU tests and the surrogate); with ``use_modelled=False`` the
    controller holds its level when the window holds no measured record, and says so in :attr:`reason`.
    Records flagged ``energy_coarse`` count (the mean over several intervals smooths them).

    :param budget_w: mean-power budget in watts, > 0 (an H200 SXM draws up to 700 W).
    :param relax_fraction: relax when power is below this fraction of the budget, in (0, 1]. Closer to 1:
        tighter tracking, more changes.
    :param ladder: settings from least to most compressed (default :data:`DEFAULT_ENERGY_LADDER`).
    :param start_index: ladder index when the newest record's setting is not on the ladder; default middle.
    :param window: records averaged, >= 1.
    :param cooldown_intervals: intervals held after a change, >= 0 (0: may change every interval).
    :param use_modelled: whether modelled energy drives decisions (see above).
    """

    name = "energy_aware"

    def __init__(
        self,
        budget_w: float = 400.0,
        relax_fraction: float = 0.8,
        ladder: Sequence[CompressionSetting] | None = None,
        start_index: int | None = None,
        window: int = 2,
        cooldown_intervals: int = 1,
        use_modelled: bool = True,
    ) -> None:
        if not (math.isfinite(budget_w) and budget_w > 0.0):
            raise ValueError(f"budget_w={budget_w} must be a finite power in watts > 0")
        if not (0.0 < relax_fraction <= 1.0):
            raise ValueError(f"relax_fraction={relax_fraction} must lie in (0, 1] (try 0.8)")
        steps = tuple(DEFAULT_ENERGY_LADDER if ladder is None else ladder)
        if not steps:
            raise ValueError("ladder is empty: pass settings from least to most compressed")
        if start_index is not None and not 0 <= start_index < len(steps):
            raise ValueError(f"start_index={start_index} is outside the ladder [0, {len(steps) - 1}]")
        if window < 1:
            raise ValueError(f"window={window} must be >= 1")
        if cooldown_intervals < 0:
            raise ValueError(f"cooldown_intervals={cooldown_intervals} must be >= 0")
        self.budget_w = float(budget_w)
        self.relax_fraction = float(relax_fraction)
        self.ladder = steps
        self.start_index = len(steps) // 2 if start_index is None else int(start_index)
        self.window = int(window)
        self.cooldown_intervals = int(cooldown_intervals)
        self.use_modelled = bool(use_modelled)
        self.reset()

    def reset(self) -> None:
        self._level: int | None = None
        self._last_step: int | None = None
        self._since_change: int = self.cooldown_intervals + 1
        self._last_setting: CompressionSetting | None = None

    @staticmethod
    def _power_w(rec: TelemetryRecord) -> float | None:
        if rec.mean_power_w > 0.0:
            return rec.mean_power_w
        if rec.energy_j > 0.0 and rec.interval_s > 0.0:
            return rec.energy_j / rec.interval_s
        return None

    def mean_power_w(self, history: Sequence[TelemetryRecord]) -> float | None:
        """Mean power over the newest ``window`` usable records, or ``None`` when none has energy."""
        powers = []
        for rec in list(history)[-self.window :]:
            if rec.energy_source == "modelled" and not self.use_modelled:
                continue
            p = self._power_w(rec)
            if p is not None:
                powers.append(p)
        return sum(powers) / len(powers) if powers else None

    def decide(
        self,
        history: Sequence[TelemetryRecord],
        objective: Objective,
        *,
        reference: Reference | None = None,
        profile: ProfileFeatures | None = None,
    ) -> CompressionSetting:
        rec = _require_history(history, type(self).__name__)
        if self._last_step is not None and rec.step < self._last_step:
            self.reset()
        if self._last_step is not None and rec.step == self._last_step and self._last_setting is not None:
            return self._last_setting
        self._last_step = rec.step
        if self._level is None:
            self._level = self.ladder.index(rec.setting) if rec.setting in self.ladder else self.start_index
            since = _intervals_since_change(history, lambda r: r.setting == rec.setting)
            if since >= 0:
                self._since_change = since
        else:
            self._since_change += 1
        level = self._level
        p = self.mean_power_w(history)
        modelled = rec.energy_source == "modelled"
        tag = " (modelled)" if modelled else ""
        if p is None:
            why = "no measured energy in the window" if not self.use_modelled else "no energy in the window"
            self.reason = f"energy_aware: {why}, hold"
        elif self._since_change <= self.cooldown_intervals:
            self.reason = f"energy_aware: cooldown ({self._since_change}/{self.cooldown_intervals})"
        elif p > self.budget_w and level < len(self.ladder) - 1:
            level += 1
            self.reason = f"energy_aware: {p:.1f} W{tag} > budget {self.budget_w:g} W, compress harder"
        elif p < self.relax_fraction * self.budget_w and level > 0:
            level -= 1
            self.reason = (
                f"energy_aware: {p:.1f} W{tag} < {self.relax_fraction:g} x budget {self.budget_w:g} W, relax"
            )
        else:
            self.reason = f"energy_aware: {p:.1f} W{tag} within band or at a ladder end, hold"
        if level != self._level:
            self._level = level
            self._since_change = 0
        self._last_setting = self.ladder[level]
        return self._last_setting


class RandomController(Controller):
    """Uniformly random grid settings: the floor every controller must beat (``mango eval``'s ``random``).

    Not a heuristic the service serves (it is not in :data:`HEURISTICS`): its draws come from ``rng``, so
    seed one per episode for reproducible evaluations.

    :param rng: the generator the draws come from (``np.random.default_rng(seed)``).
    :param grid: the action grid drawn from, uniformly per component.
    """

    name = "random"

    def __init__(self, rng: np.random.Generator, grid: ActionGrid = DEFAULT_GRID) -> None:
        self.rng = rng
        self.grid = grid

    def decide(
        self,
        history: Sequence[TelemetryRecord],
        objective: Objective,
        *,
        reference: Reference | None = None,
        profile: ProfileFeatures | None = None,
    ) -> CompressionSetting:
        setting = self.grid.setting([int(self.rng.integers(n)) for n in self.grid.nvec])
        self.reason = f"random {setting.label()}"
        return setting


#: name -> factory(**kwargs) of every heuristic controller.
HEURISTICS: dict[str, Callable[..., Controller]] = {
    "static": StaticController,
    "accordion": AccordionController,
    "loraven": LoRAvenController,
    "energy_aware": EnergyAwareController,
}


def make_controller(name: str, **kwargs: Any) -> Controller:
    """Build a heuristic controller by name; ``ValueError`` lists the known names."""
    try:
        factory = HEURISTICS[name]
    except KeyError:
        raise ValueError(f"unknown controller {name!r}; known: {sorted(HEURISTICS)}") from None
    return factory(**kwargs)


# ------------------------------------------------------------------------------------- the first decision
#: Side of the typical square matrix whose state ratio a first-interval candidate is given (the service's
#: shield models the same matrix by default, ``MANGO_SHIELD_MATRIX_SIDE``); the ratios of the rank-0
#: candidates barely depend on it.
FIRST_MATRIX_SIDE = 1024
#: The prior relative excess loss of each first-interval candidate (the reward's loss unit: 0.01 = 1 % above
#: the uncompressed run at the same step): for rank 0 at 8-32 bits, the fitted surrogate's mid-run excess on
#: the CPU workloads, rounded up (BENCHMARKS.md, issue 13). r0/b4/g0 had 0.08 from traces of the 4-bit state
#: before sessions 30-31 (factored ``v``, NF4, stochastic rounding); today's (full ``v``, uniform code,
#: rounded to nearest) trained to a loss at or below r0/b8/g0's wherever both were measured (the 85M byte GPT
#: on an H100 and the CPU toy LM, BENCHMARKS.md, sessions 29-31), so its prior is r0/b8/g0's and the job's
#: memory, time and energy decide between them. r0/b3/g0 is not a candidate: with session 33's full ``v``
#: and nearest rounding it trained as low as 4 bits on the bench's recipe and the CPU toy LM, but an opening
#: of one interval at 3 bits on the GPU demo job ended far above both static runs (BENCHMARKS.md, session
#: 33). One projected candidate, rank
#: 64 at 4 bits: what a rank costs depends on the job's spectrum, so its prior is the largest mean excess the
#: H200 traces recorded for it, rounded up. It opens a job only where memory outweighs that much loss
#: (memory-first), because the first steps' setting has a lasting effect: a run that opened at rank 0 and
#: moved to rank 64 after one interval ended above one at rank 64 from the start, while one that opened at
#: rank 64 and moved to rank 0 kept nearly all of rank 64's final loss (BENCHMARKS.md, sessions 16-17: the
#: H200 demos and ``benchmarks.switch_loss``); the policy may leave it at its first decision.
_FIRST_PRIORS: dict[str, float] = {
    "r0/b32/g0": 0.0,
    "r0/b16/g0": 0.0005,
    "r0/b8/g0": 0.002,
    "r0/b4/g0": 0.002,
    "r64/b4/g0": 0.05,
}


#: The settings a job may start in before any telemetry: label -> (prior relative excess loss, modelled
#: state bytes over AdamW's). The ratio comes from the one byte model (:func:`client.compression.sizes.
#: bytes_per_param` on a :data:`FIRST_MATRIX_SIDE` matrix: rank 0, ``m``, ``v`` and the error buffer at
#: ``bits``, ``v`` as :func:`~client.compression.sizes.auto_factors_second_moment` says), so it follows the
#: optimizer's layout when that changes.
def _modelled_state_ratio(label: str) -> float:
    return bytes_per_param(CompressionSetting.parse(label), FIRST_MATRIX_SIDE) / DENSE_BYTES_PER_PARAM


FIRST_CANDIDATES: dict[str, tuple[float, float]] = {
    label: (prior, _modelled_state_ratio(label)) for label, prior in _FIRST_PRIORS.items()
}


def first_setting(
    objective: Objective,
    *,
    dense_state_bytes: int | None = None,
    time_ratio: Mapping[str, float] | None = None,
    energy_ratio: Mapping[str, float] | None = None,
    state_ratio: Mapping[str, float] | None = None,
) -> tuple[CompressionSetting, str]:
    """The setting of the first control interval, chosen before any telemetry exists.

    Minimizes the objective's scalar cost ``w_loss * prior_loss + w_memory * memory + w_energy * energy +
    w_time * time`` over :data:`FIRST_CANDIDATES`, with each candidate's interval time and energy ratio to
    the uncompressed run from the job's cost profile (``time_ratio`` / ``energy_ratio``: label -> ratio;
    1.0 where unknown) and its state ratio (``state_ratio``, else the modelled one). With a memory budget
    (``dense_state_bytes`` needed to read it) memory is a constraint: candidates over the budget are
    dropped and the memory term leaves the sum; if none fits, the smallest candidate is chosen (the shield
    then projects further). Returns the setting and a one-line reason. The environment makes the same call
    at every episode's start, so a policy trains on the episodes production runs.
    """
    budget = objective.memory_budget_bytes
    w = objective.weights().astype(float)
    best: tuple[float, str] | None = None
    smallest = min(FIRST_CANDIDATES, key=lambda k: FIRST_CANDIDATES[k][1])
    for label, (prior, mem_model) in FIRST_CANDIDATES.items():
        mem = (state_ratio or {}).get(label, mem_model)
        if budget is not None and dense_state_bytes and mem * dense_state_bytes > budget:
            continue
        t = (time_ratio or {}).get(label, 1.0)
        e = (energy_ratio or {}).get(label, t if time_ratio else 1.0)
        cost = w[0] * prior + (0.0 if budget is not None else w[1] * mem) + w[2] * e + w[3] * t
        if best is None or cost < best[0] - 1e-12:
            best = (cost, label)
    if best is None:
        return CompressionSetting.parse(smallest), f"first interval: no candidate fits the budget; {smallest}"
    return CompressionSetting.parse(
        best[1]
    ), f"first interval: {best[1]} minimizes the objective's prior cost"


#: The optimizer's share of a training step assumed for a profile without a measured training step (the
#: hook's ``profile="auto"`` before its first interval): the geometric mean of the measured shares of the
#: environment's sample profiles, which ``tests/client/test_profile.py`` keeps it to. Reading the
#: optimizer-step ratios as interval ratios (a share of 1) instead would rank the first decision's candidates
#: as no training episode does; BENCHMARKS (session 18) counts how often each choice differs.
ASSUMED_OPTIMIZER_SHARE = 0.05


def first_setting_for_profile(
    objective: Objective, profile: CostProfile | None, dense_state_bytes: int | None = None
) -> tuple[CompressionSetting, str]:
    """:func:`first_setting` with the ratios read from a :class:`~client.protocol.CostProfile`: training-step
    ratios ``1 + share * (step ratio - 1)`` with the profile's optimizer share
    (:data:`ASSUMED_OPTIMIZER_SHARE` where it has no measured training step), measured state bytes where
    profiled."""
    if profile is None:
        return first_setting(objective, dense_state_bytes=dense_state_bytes)
    t, e, m = {}, {}, {}
    share = profile.optimizer_share
    assumed = share is None
    if share is None:
        share = ASSUMED_OPTIMIZER_SHARE
    for label in FIRST_CANDIDATES:
        s = CompressionSetting.parse(label)
        t[label] = 1.0 + share * (profile.step_ratio(s) - 1.0)
        e[label] = 1.0 + share * (profile.energy_ratio(s) - 1.0)
        c = profile.settings.get(label)
        if c is not None and c.state_bytes is not None:
            m[label] = c.state_bytes / (8.0 * profile.n_params)
    setting, reason = first_setting(
        objective, dense_state_bytes=dense_state_bytes, time_ratio=t, energy_ratio=e, state_ratio=m
    )
    return setting, reason + (f" (optimizer share {share:g} assumed)" if assumed else "")
