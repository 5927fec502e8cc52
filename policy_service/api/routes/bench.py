"""``POST /bench/empty``: the framework's floor (no auth, no body parsing), to compare decide against."""

from __future__ import annotations

from fastapi import APIRouter, Response

router = APIRouter(tags=["bench"])


@router.post("/bench/empty")
async def empty() -> Response:
    """Returns ``{}`` without reading the request body. Only present with ``MANGO_BENCH_ENDPOINTS=true``."""
    return Response(b"{}", media_type="application/json")
