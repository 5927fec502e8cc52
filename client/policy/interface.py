"""The one interface of everything that chooses a setting: telemetry history and objective -> setting.

Heuristics (:mod:`client.controllers`), the learned policy (:class:`client.policy.LearnedPolicy`), the
environment recorder's random controllers and the evaluation's baselines implement :class:`Controller`;
the hook (:class:`client.hook.AdaptiveCompression`), the policy client's fallback, the policy service and
``mango eval`` call it the same way. Subclass it for the default :meth:`Controller.reset` and ``reason``, or
implement the members structurally.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from client.protocol import CompressionSetting, CostProfile, Objective, Reference, TelemetryRecord

__all__ = ["Controller", "ProfileFeatures"]

#: A job's hardware: its :class:`CostProfile`, or the profile's features (``CostProfile.features()``, what
#: the surrogate environment draws per episode).
ProfileFeatures = CostProfile | Sequence[float]


@runtime_checkable
class Controller(Protocol):
    """Chooses the compression setting of the next control interval.

    :attr:`name` identifies the controller (decision logs say ``local:<name>``); :attr:`reason` holds a
    one-line explanation of the last decision (empty before the first).

    ``decide`` gets the newest telemetry records (oldest first, newest ``history[-1]``; at least one), the
    job's objective, and, where known, the job's :class:`Reference` (the normalization of the observation;
    derived from the window when ``None``) and hardware cost ``profile``. Heuristics read the window only;
    the learned policy encodes all four (``ObservationSpec.encode``). Stateful controllers keep per-job state
    between calls (use one instance per job); :meth:`reset` forgets it.
    """

    name: str = "controller"
    reason: str = ""

    def decide(
        self,
        history: Sequence[TelemetryRecord],
        objective: Objective,
        *,
        reference: Reference | None = None,
        profile: ProfileFeatures | None = None,
    ) -> CompressionSetting:
        """The setting for the next interval."""
        ...

    def reset(self) -> None:
        """Forget per-job state (cooldowns, hysteresis); stateless controllers do nothing."""
        return None
