"""Prometheus metrics of one app instance, in its own ``CollectorRegistry`` (tests build many apps).

Series (all prefixed ``mango_``):

* ``http_requests_total{route, method, status}`` and ``http_request_duration_seconds{route}`` (histogram with
  sub-millisecond buckets): ``route`` is the path template (``/v1/decide``), ``unmatched`` for unknown paths,
  so the label set stays bounded whatever clients send.
* ``decisions_total{policy, setting}``: ``setting`` is ``CompressionSetting.label()`` (``r8/b4/g0``), at most
  the grid's 240 points per policy.
* ``shield_overrides_total{rule}``: ``memory_budget`` or ``divergence``.
* ``policy_fallbacks_total{policy}``: a policy raised and the fallback heuristic answered.
* ``policy_reloads_total{result}``, ``policies_loaded`` and ``registry_generation``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["LATENCY_BUCKETS_S", "ServiceMetrics"]

#: Histogram buckets in seconds, dense below 5 ms where a healthy decide lands.
LATENCY_BUCKETS_S = (0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5)


class ServiceMetrics:
    """All collectors of one app; :meth:`render` returns the Prometheus text exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "mango_http_requests_total",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "mango_http_request_duration_seconds",
            "Time from request start to response end",
            ["route"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.decisions = Counter(
            "mango_decisions_total",
            "Decisions returned, by policy and setting label",
            ["policy", "setting"],
            registry=r,
        )
        self.shield_overrides = Counter(
            "mango_shield_overrides_total", "Decisions changed by a shield rule", ["rule"], registry=r
        )
        self.fallbacks = Counter(
            "mango_policy_fallbacks_total",
            "Requests answered by the fallback after a policy failed",
            ["policy"],
            registry=r,
        )
        self.reloads = Counter(
            "mango_policy_reloads_total", "Policy reloads by result", ["result"], registry=r
        )
        self.policies_loaded = Gauge(
            "mango_policies_loaded", "Learned policies in the current snapshot", registry=r
        )
        self.generation = Gauge(
            "mango_registry_generation", "Generation of the current policy snapshot", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
