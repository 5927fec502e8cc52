"""Heuristic controllers: history + objective -> setting.

They are the client's fallback when the policy service is unreachable, the service's always-available
policies, and the baselines the learned policy is measured against. Every controller implements
:class:`Controller`; :func:`make_controller` builds one by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from client.protocol import CompressionSetting, Objective, TelemetryRecord

__all__ = ["HEURISTICS", "Controller", "StaticController", "make_controller"]


class Controller:
    """Base class. Subclasses override :meth:`decide`; :meth:`reset` clears per-episode state."""

    name: str = "controller"

    def decide(self, history: Sequence[TelemetryRecord], objective: Objective) -> CompressionSetting:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget per-episode state (cooldowns, hysteresis)."""


class StaticController(Controller):
    """Always returns the same setting (the hand-tuned baseline)."""

    name = "static"

    def __init__(self, setting: CompressionSetting | None = None) -> None:
        self.setting = setting or CompressionSetting(rank=8, bits=8, gamma=0.0)

    def decide(self, history: Sequence[TelemetryRecord], objective: Objective) -> CompressionSetting:
        return self.setting


#: name -> factory(**kwargs) of every heuristic controller.
HEURISTICS: dict[str, Callable[..., Controller]] = {"static": StaticController}


def make_controller(name: str, **kwargs: Any) -> Controller:
    """Build a heuristic controller by name; ``ValueError`` lists the known names."""
    try:
        factory = HEURISTICS[name]
    except KeyError:
        raise ValueError(f"unknown controller {name!r}; known: {sorted(HEURISTICS)}") from None
    return factory(**kwargs)
