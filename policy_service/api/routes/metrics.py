"""``GET /metrics``: Prometheus text exposition of this app's registry (no key: scrapers are internal)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ..deps import MetricsDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(m: MetricsDep) -> Response:
    """Request counts and latency by route, decisions by setting, shield overrides, reloads."""
    return Response(m.render(), media_type=CONTENT_TYPE_LATEST)
