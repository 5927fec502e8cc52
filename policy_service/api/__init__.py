"""HTTP layer: ``deps`` (auth and service lookup) and ``routes`` (one router per concern)."""

from .routes import api_router, bench_router

__all__ = ["api_router", "bench_router"]
