"""Start-up order: the service is ready once its policies are loaded; the hot-reload worker starts after."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import httpx

from policy_service.config import Settings
from policy_service.main import create_app
from policy_service.registry import PolicyRegistry

from .support import export_tiny

#: A Python start-up on a busy shared machine can take seconds.
LOADER_UP_TIMEOUT_S = 120.0


def test_ready_without_waiting_for_the_reload_worker(tmp_path: Path) -> None:
    policy_dir = tmp_path / "policies"
    export_tiny(policy_dir, version="v1")
    admin_key = secrets.token_urlsafe(32)
    settings = Settings(
        api_key=secrets.token_urlsafe(32),  # type: ignore[arg-type]
        admin_key=admin_key,  # type: ignore[arg-type]
        policy_dir=policy_dir,
        default_policy_dir=None,
        reload_in_subprocess=True,
    )
    app = create_app(settings)
    registry = app.state.registry

    async def scenario() -> tuple[str, int, dict[str, str], dict[str, object]]:
        async with app.router.lifespan_context(app):
            # The lifespan's start-up is over: uvicorn would now say "Application startup complete" and answer
            # /readyz. The worker has not even been asked to start (the old start-up waited for it to be up).
            at_ready = registry.loader_status
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://svc") as c:
                ready = await c.get("/readyz")
                deadline = time.monotonic() + LOADER_UP_TIMEOUT_S
                while registry.loader_status != "up" and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                export_tiny(policy_dir, version="v2", seed=1)
                reload = await c.post("/v1/policies/reload", headers={"X-API-Key": admin_key})
                health = (await c.get("/healthz")).json()
            return at_ready, ready.status_code, reload.json(), health

    at_ready, ready_status, reload, health = asyncio.run(scenario())
    assert at_ready == "stopped"
    assert ready_status == 200
    assert reload["learned"] == {"tiny": "v2"} and not reload["errors"]  # loaded through the worker
    assert health["reloader"] == "up" and health["generation"] == 2
    assert registry.loader_status == "stopped"  # the lifespan's shutdown stopped it


def test_readyz_reports_the_reload_worker_off_when_reloads_run_in_process(tmp_path: Path) -> None:
    settings = Settings(
        api_key=secrets.token_urlsafe(32),  # type: ignore[arg-type]
        admin_key=secrets.token_urlsafe(32),  # type: ignore[arg-type]
        default_policy_dir=None,
        reload_in_subprocess=False,
    )
    app = create_app(settings)

    async def scenario() -> httpx.Response:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://svc") as c:
                return await c.get("/readyz")

    r = asyncio.run(scenario())
    assert r.status_code == 200 and r.json() == {"status": "ok", "generation": 1, "reloader": "off"}


def test_a_late_background_start_after_shutdown_starts_no_worker(tmp_path: Path) -> None:
    """The lifespan's start task runs in a thread shutdown cannot stop: once closed, it starts nothing."""
    registry = PolicyRegistry(policy_dir=tmp_path, isolate=True)
    registry.reload()
    registry.close()
    assert registry.start_loader() is None
    assert registry.loader_status == "stopped"
