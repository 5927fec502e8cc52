"""Routers: ``api_router`` (the service) and ``bench_router`` (added only with ``MANGO_BENCH_ENDPOINTS``)."""

from fastapi import APIRouter

from . import bench, decide, health, metrics, policies

api_router = APIRouter()
api_router.include_router(decide.router)
api_router.include_router(policies.router)
api_router.include_router(health.router)
api_router.include_router(metrics.router)

bench_router = bench.router

__all__ = ["api_router", "bench_router"]
