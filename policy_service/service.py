"""The decide path: resolve the policy in the current snapshot, let it choose, shield the choice, count it."""

from __future__ import annotations

import logging
from typing import Any

from client.policy import Controller
from client.protocol import CompressionSetting, DecideRequest, Decision

from .errors import NotReadyError
from .metrics import ServiceMetrics
from .registry import PolicyRegistry
from .shield import Shield

__all__ = ["DecisionService"]

log = logging.getLogger(__name__)

#: Most decision counters kept at hand (a policy name and a grid point each; the grid has 240 points).
_MAX_CACHED_COUNTERS = 4096


def _ask(policy: Controller, request: DecideRequest) -> CompressionSetting:
    """The policy's setting for the request's window (every kind of policy is a :class:`Controller`)."""
    return policy.decide(
        request.history, request.objective, reference=request.reference, profile=request.profile
    )


class DecisionService:
    """Stateless per request; safe to call from the event loop (one decision is ~0.1-0.3 ms of CPU).

    A policy that raises does not fail the request: the snapshot's fallback heuristic answers, the reason
    says so, and ``mango_policy_fallbacks_total`` counts it. An unknown policy name is the caller's mistake
    and raises ``UnknownPolicyError`` (404).
    """

    def __init__(self, registry: PolicyRegistry, shield: Shield, metrics: ServiceMetrics) -> None:
        self.registry = registry
        self.shield = shield
        self.metrics = metrics
        # mango_decisions_total's children by (policy, rank, bits, gamma): labels() takes a lock and formats
        # the label per call; bounded (policies x grid points), like the middleware's cache.
        self._decision_counters: dict[tuple[str, int, int, float], Any] = {}

    def _count(self, policy: str, setting: CompressionSetting) -> None:
        key = (policy, setting.rank, setting.bits, setting.gamma)
        counter = self._decision_counters.get(key)
        if counter is None:
            counter = self.metrics.decisions.labels(policy, setting.label())
            if len(self._decision_counters) < _MAX_CACHED_COUNTERS:
                self._decision_counters[key] = counter
        counter.inc()

    def decide(self, request: DecideRequest) -> Decision:
        snap = self.registry.snapshot  # read once: a concurrent reload cannot change it under us
        if snap is None:
            raise NotReadyError("policies are still loading; retry shortly (GET /readyz)")
        policy = snap.resolve(request.policy)
        note = ""
        try:
            setting = _ask(policy, request)
        except Exception as exc:
            log.exception(
                "policy %s (%s) failed; answering with %s", policy.name, policy.version, snap.fallback
            )
            self.metrics.fallbacks.labels(policy.name).inc()
            note = (
                f"policy {policy.name!r} failed ({type(exc).__name__}); "
                f"answered by fallback {snap.fallback!r}"
            )
            policy = snap.resolve(snap.fallback)
            setting = _ask(policy, request)
        result = self.shield.check(setting, request, policy.grid)
        for rule in result.rules:
            self.metrics.shield_overrides.labels(rule).inc()
        self._count(policy.name, result.setting)
        reason = "; ".join(r for r in (note, result.reason) if r)
        return Decision(
            setting=result.setting,
            policy=policy.name,
            policy_version=policy.version,
            shielded=result.shielded,
            reason=reason,
        )
