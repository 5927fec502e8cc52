"""Pure ASGI middleware (no ``BaseHTTPMiddleware``: it costs a task and a copy per request).

* :class:`BodyLimitMiddleware` answers 413 before the app parses anything: at once from ``Content-Length``,
  or after buffering at most ``max_body_bytes + 1`` bytes of a chunked body. Bodies within the limit reach
  the app untouched (uvicorn enforces ``Content-Length`` framing).
* :class:`MetricsMiddleware` counts every response by route template and status and times it. A request
  whose client hung up before any response started is counted as 499 (client closed request), not 500.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import CLIENT_CLOSED_STATUS
from .metrics import ServiceMetrics

__all__ = ["BodyLimitMiddleware", "MetricsMiddleware"]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


async def _send_json(send: Send, status: int, payload: dict[str, Any], *, close: bool = False) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:  # the unread body is still on the connection: do not reuse it
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Reject request bodies over ``max_body_bytes`` with 413 (``MANGO_MAX_BODY_BYTES``)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _too_large(self, size: str) -> dict[str, Any]:
        return {
            "detail": f"request body is {size} bytes; the limit is max_body_bytes={self.max_body_bytes} "
            "(MANGO_MAX_BODY_BYTES)"
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length: bytes | None = None
        chunked = False
        for key, value in scope["headers"]:
            if key == b"content-length":
                length = value
            elif key == b"transfer-encoding":
                chunked = True
        if length is not None and not chunked:
            try:
                n = int(length)
            except ValueError:
                await _send_json(send, 400, {"detail": "invalid Content-Length header"}, close=True)
                return
            if n > self.max_body_bytes:
                await _send_json(send, 413, self._too_large(str(n)), close=True)
                return
            await self.app(scope, receive, send)
            return
        if not chunked:  # no body at all
            await self.app(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if len(body) > self.max_body_bytes:
                await _send_json(send, 413, self._too_large(f"more than {self.max_body_bytes}"), close=more)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class MetricsMiddleware:
    """Record ``mango_http_requests_total`` and ``mango_http_request_duration_seconds`` for every request."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # until the app answers or returns: an exception escaping the app is a 500
        disconnected = False

        async def receive_watch() -> Message:
            nonlocal disconnected
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
            return message

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive_watch, send_status)
            if disconnected and status == 500:  # returned without answering: the client went away first
                status = CLIENT_CLOSED_STATUS
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "other"
            key = (route, method, status)
            children = self._children.get(key)
            if children is None:
                m = self.metrics
                children = (m.requests.labels(route, method, str(status)), m.latency.labels(route))
                if len(self._children) < 1024:  # bounded: route templates x methods x statuses
                    self._children[key] = children
            children[0].inc()
            children[1].observe(elapsed)
