"""Probes: ``/healthz`` (the process serves HTTP) and ``/readyz`` (policies are loaded)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ...schemas import Health
from ..deps import RegistryDep

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz(registry: RegistryDep) -> Health:
    """Liveness: 200 while the process answers HTTP."""
    snap = registry.snapshot
    return Health(status="ok", generation=snap.generation if snap else 0, reloader=registry.loader_status)


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(registry: RegistryDep) -> JSONResponse:
    """Readiness: 200 once a policy snapshot is published (the fallback heuristic is always in it).

    The hot-reload loader process is not waited for (``reloader`` says where it stands).
    """
    snap = registry.snapshot
    reloader = registry.loader_status
    if snap is None:
        return JSONResponse(
            Health(status="loading", generation=0, reloader=reloader).model_dump(), status_code=503
        )
    return JSONResponse(Health(status="ok", generation=snap.generation, reloader=reloader).model_dump())
