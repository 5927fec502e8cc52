"""The decide path: resolve the policy in the current snapshot, let it choose, shield the choice, count it."""

from __future__ import annotations

import logging
from typing import Any

from client.policy import Controller
from client.protocol import CompressionSetting, DecideRequest, Decision

from .errors import NotReadyError
from .metrics import ServiceMetrics
from .registry import PolicyRegistry, ServedPolicy
from .shield import Shield, ShieldResult

__all__ = ["DecisionService"]

log = logging.getLogger(__name__)

#: Most (policy, version, setting) entries kept at hand: policies x versions x the grid's 240 points. When
#: full the table starts over (a reload's new versions refill it), so memory stays bounded.
_MAX_CACHED_ANSWERS = 4096


def _ask(policy: Controller, request: DecideRequest) -> CompressionSetting:
    """The policy's setting for the request's window (every kind of policy is a :class:`Controller`)."""
    return policy.decide(
        request.history, request.objective, reference=request.reference, profile=request.profile
    )


class DecisionService:
    """Stateless per request; safe to call from the event loop (a decision is a fraction of a millisecond of
    CPU, less than a thread hop: ``mango bench policy``).

    A policy that raises does not fail the request: the snapshot's fallback heuristic answers, the reason
    says so, and ``mango_policy_fallbacks_total`` counts it. An unknown policy name is the caller's mistake
    and raises ``UnknownPolicyError`` (404).

    :meth:`decide` returns the :class:`Decision`; :meth:`decide_json` returns its JSON bytes, what
    ``POST /v1/decide`` sends. Most answers are a policy's unshielded choice, so for each (policy, version,
    setting) the service keeps the serialized answer and the ``mango_decisions_total`` child beside it: such
    an answer costs one dict lookup, no model construction, no serialization and no ``labels()`` call (which
    takes a lock and formats the label). Shielded answers and fallbacks (they carry a per-request reason)
    are built and serialized per request.
    """

    def __init__(self, registry: PolicyRegistry, shield: Shield, metrics: ServiceMetrics) -> None:
        self.registry = registry
        self.shield = shield
        self.metrics = metrics
        # (policy, version, rank, bits, gamma) -> (decisions counter child, the unshielded answer's JSON)
        self._answers: dict[tuple[str, str, int, int, float], tuple[Any, bytes]] = {}

    def _choose(self, request: DecideRequest) -> tuple[ServedPolicy, ShieldResult, str]:
        """The policy that answered, its shielded setting, and a note when the fallback answered."""
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
        return policy, result, note

    def _answer(self, policy: ServedPolicy, setting: CompressionSetting) -> tuple[Any, bytes]:
        """The counter child and the unshielded answer's JSON for ``setting`` (built once, then looked up)."""
        key = (policy.name, policy.version, setting.rank, setting.bits, setting.gamma)
        entry = self._answers.get(key)
        if entry is None:
            decision = Decision(setting=setting, policy=policy.name, policy_version=policy.version)
            entry = (
                self.metrics.decisions.labels(policy.name, setting.label()),
                decision.model_dump_json().encode(),
            )
            if len(self._answers) >= _MAX_CACHED_ANSWERS:
                self._answers.clear()
            self._answers[key] = entry
        return entry

    @staticmethod
    def _decision(policy: ServedPolicy, result: ShieldResult, note: str) -> Decision:
        return Decision(
            setting=result.setting,
            policy=policy.name,
            policy_version=policy.version,
            shielded=result.shielded,
            reason="; ".join(r for r in (note, result.reason) if r),
        )

    def decide(self, request: DecideRequest) -> Decision:
        """The decision for ``request`` (counted in ``mango_decisions_total``)."""
        policy, result, note = self._choose(request)
        self._answer(policy, result.setting)[0].inc()
        return self._decision(policy, result, note)

    def decide_json(self, request: DecideRequest) -> bytes:
        """:meth:`decide`'s answer as the JSON bytes of the :class:`Decision`."""
        policy, result, note = self._choose(request)
        counter, body = self._answer(policy, result.setting)
        counter.inc()
        if result.shielded or note:
            return self._decision(policy, result, note).model_dump_json().encode()
        return body
