"""``GET /v1/policies`` (user key) and ``POST /v1/policies/reload`` (admin key)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from client.controllers import HEURISTICS

from ...errors import NotReadyError
from ...registry import HeuristicPolicy
from ...schemas import ErrorMessage, PolicyInfo, PolicyList, ReloadResult
from ..deps import AdminKey, MetricsDep, RegistryDep, UserKey

router = APIRouter(tags=["policies"])


@router.get(
    "/v1/policies",
    response_model=PolicyList,
    responses={401: {"model": ErrorMessage}, 503: {"model": ErrorMessage}},
)
async def list_policies(_role: UserKey, registry: RegistryDep) -> PolicyList:
    """Every policy a request may name, what ``default`` answers with, and artifacts that failed to load."""
    snap = registry.snapshot
    if snap is None:
        raise NotReadyError("policies are still loading; retry shortly (GET /readyz)")
    infos = [
        PolicyInfo(name=p.name, kind="learned", version=p.version, details=p.info())
        for p in sorted(snap.learned.values(), key=lambda p: p.name)
    ]
    infos += [
        PolicyInfo(name=n, kind="heuristic", version=HeuristicPolicy(n, f).version)
        for n, f in sorted(HEURISTICS.items())
        if n not in snap.learned
    ]
    default = snap.resolve("default").name
    return PolicyList(
        default=default,
        fallback=snap.fallback,
        generation=snap.generation,
        policies=infos,
        errors=dict(snap.errors),
    )


@router.post(
    "/v1/policies/reload",
    response_model=ReloadResult,
    responses={401: {"model": ErrorMessage}, 403: {"model": ErrorMessage}},
)
def reload_policies(
    _role: AdminKey,
    registry: RegistryDep,
    metrics: MetricsDep,
    force: Annotated[bool, Query(description="re-read artifacts whose files did not change")] = False,
) -> ReloadResult:
    """Re-read the policy directories and swap in a new snapshot; requests in flight are not affected.

    Runs in a worker thread (a plain ``def`` route), so decisions keep being served from the old snapshot
    while the new one loads.
    """
    report = registry.reload(force=force)
    metrics.reloads.labels("errors" if report.errors else "ok").inc()
    metrics.generation.set(report.generation)
    metrics.policies_loaded.set(len(report.learned))
    return ReloadResult(
        generation=report.generation,
        learned=report.learned,
        reused=report.reused,
        default=report.default_target,
        errors=report.errors,
        duration_s=report.duration_s,
    )
