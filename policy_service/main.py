"""App factory: ``create_app(settings)`` wires settings, registry, shield, metrics, routes and middleware.

Run it with ``mango serve`` (:mod:`policy_service.cli`), or
``uvicorn --factory policy_service.main:create_app`` (settings from the environment). Each app owns its
Prometheus registry, so tests can build many.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from client.protocol import DEFAULT_GRID, DecideRequest

from .api import api_router, bench_router
from .api.deps import KeyDigests
from .config import Settings
from .errors import install_error_handlers
from .loader import stop_resource_tracker
from .metrics import ServiceMetrics
from .middleware import BodyLimitMiddleware, MetricsMiddleware
from .registry import PolicyRegistry
from .service import DecisionService
from .shield import Shield, ShieldConfig

__all__ = ["create_app"]

log = logging.getLogger(__name__)

API_VERSION = "1.0.0"


def _state_protocol_rules(components: dict[str, Any]) -> None:
    """Write the protocol's validator-only rules into the schema, so a schema-valid body is a valid body.

    ``CompressionSetting`` checks ``rank`` and ``bits`` against the grid and ``Objective`` needs one positive
    weight in Python validators, which pydantic cannot export; without this, generated clients and fuzzers
    send schema-valid bodies that get 422.
    """
    setting = components.get("CompressionSetting", {}).get("properties", {})
    if "rank" in setting:
        setting["rank"]["enum"] = sorted(DEFAULT_GRID.ranks)
    if "bits" in setting:
        setting["bits"]["enum"] = sorted(DEFAULT_GRID.bits)
    objective = components.get("Objective")
    if objective is not None:
        # w_loss defaults to 1.0, so leaving it out satisfies the rule; the others default to 0.
        objective["anyOf"] = [
            {"properties": {"w_loss": {"exclusiveMinimum": 0}}},
            *(
                {"required": [w], "properties": {w: {"exclusiveMinimum": 0}}}
                for w in ("w_memory", "w_energy", "w_time")
            ),
        ]
        objective["description"] = objective.get("description", "") + "\n\nAt least one weight is > 0."


def _document_models(app: FastAPI, *models: type[BaseModel]) -> None:
    """Add ``models`` (and the models they nest) to the OpenAPI components, with the protocol's grid rules.

    ``POST /v1/decide`` parses its body by hand (see ``api/routes/decide.py``) and refers to
    ``#/components/schemas/DecideRequest``, which FastAPI only emits for models it parses itself.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            js = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in js.pop("$defs", {}).items():
                components.setdefault(name, sub)
            components.setdefault(model.__name__, js)
        _state_protocol_rules(components)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


async def _start_loader(registry: PolicyRegistry) -> None:
    """Start the hot-reload worker once the service serves; a failure is logged (a reload retries)."""
    await asyncio.sleep(0)  # let the lifespan finish first: readiness never waits for this task
    up = await run_in_threadpool(registry.start_loader)
    if up is None:
        return
    try:
        await asyncio.wrap_future(up)
    except Exception as exc:  # reloads will try to start it again; serving does not need it
        log.warning("hot-reload loader process did not start (%s: %s)", type(exc).__name__, exc)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service; policies load in the lifespan start-up (``/readyz`` turns 200 after)."""
    settings = settings or Settings()  # type: ignore[call-arg]  # required keys come from the environment
    metrics = ServiceMetrics()
    registry = PolicyRegistry(
        policy_dir=settings.policy_dir,
        default_policy_dir=settings.default_policy_dir,
        default_policy=settings.default_policy,
        fallback=settings.fallback_policy,
        isolate=settings.reload_in_subprocess,
    )
    shield = Shield(
        ShieldConfig(
            loss_rise_frac=settings.shield_loss_rise_frac,
            memory_margin_frac=settings.shield_memory_margin_frac,
            matrix_side=settings.shield_matrix_side,
        )
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("policy service settings: %s", settings.public_dict())  # once per start; no secrets
        if settings.dev_mode:
            log.warning("DEV MODE: weak keys are accepted; never expose this server (host=%s)", settings.host)
        # A reload runs in a worker thread; a shorter GIL switch interval bounds how long it can hold up
        # the event loop (Python's default is 5 ms, most of a p99 budget).
        sys.setswitchinterval(settings.gil_switch_interval_s)
        report = await run_in_threadpool(registry.reload)  # the first load runs here, in-process
        metrics.reloads.labels("errors" if report.errors else "ok").inc()
        metrics.generation.set(report.generation)
        metrics.policies_loaded.set(len(report.learned))
        # Start-up objects (modules, models) live forever: move them out of the GC's generations so
        # collections during serving scan less (shorter pauses, better p99).
        gc.collect()
        gc.freeze()
        # Ready from here on: the hot-reload worker process (a Python start-up of its own, lowered priority)
        # starts in the background; a reload sent before it is up waits for it, a decision never does.
        loader_task = asyncio.create_task(_start_loader(registry))
        try:
            yield
        finally:
            loader_task.cancel()
            await run_in_threadpool(registry.close)
            stop_resource_tracker()

    # /docs (Swagger UI) and /redoc load their scripts and styles from this server (fastapi-offline ships them
    # under /static-offline-docs), not from a CDN: the pages work on a network without internet access.
    app = FastAPIOffline(
        title="MANGO policy service",
        version=API_VERSION,
        summary="Picks gradient/optimizer-state compression settings (rank, bits, gamma) for training jobs.",
        lifespan=lifespan,
        separate_input_output_schemas=False,  # one schema per model, shared by the hand-parsed decide body
        # FastAPI's native OpenTelemetry checks the global providers on every request (~10 us); this
        # service exports Prometheus metrics instead. MANGO_OTEL_TELEMETRY=true turns it back on.
        telemetry=None
        if settings.otel_telemetry
        else {"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.registry = registry
    app.state.service = DecisionService(registry, shield, metrics)
    app.state.key_digests = KeyDigests.from_settings(settings)
    install_error_handlers(app)
    app.include_router(api_router)
    _document_models(app, DecideRequest)
    if settings.bench_endpoints:
        app.include_router(bench_router)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # added last = outermost: sees 413s too
    return app
