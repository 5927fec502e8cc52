"""The service's exception family and the one place that maps exceptions to HTTP responses.

* ``RequestValidationError`` (a body that fails ``DecideRequest`` validation or is not bounded JSON, a bad
  query parameter) -> 422 in the one shape the OpenAPI document declares (FastAPI's ``HTTPValidationError``):
  ``{"detail": [{"loc": ["body", "history", 2, "loss"], "msg": "...", "type": "..."}, ...]}``. The raw
  input is never echoed (it may be large, or NaN, which JSON cannot carry).
* :class:`UnknownPolicyError` -> 404 naming the policy and the known ones; :class:`NotReadyError` -> 503;
  :class:`UnsupportedMediaTypeError` -> 415.
* ``ClientDisconnect`` (the client hung up before its body arrived) -> nothing is sent; counted as status
  499 ("client closed request") in ``mango_http_requests_total``, logged at debug level: it is not a fault
  of the service and must not fire the error alerts.
* Anything else -> 500 with a generic message (the traceback goes to the log, not to the client).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

__all__ = [
    "CLIENT_CLOSED_STATUS",
    "NotReadyError",
    "PolicyServiceError",
    "UnknownPolicyError",
    "UnsupportedMediaTypeError",
    "format_validation_errors",
    "install_error_handlers",
]

#: Status recorded (never sent) when the client hung up before the request was answered (nginx's 499).
CLIENT_CLOSED_STATUS = 499

log = logging.getLogger(__name__)


class PolicyServiceError(Exception):
    """Base of the service's runtime faults; ``status_code`` is the HTTP status the handler sends."""

    status_code = 500


class UnknownPolicyError(PolicyServiceError):
    """The request names a policy that the current snapshot does not hold."""

    status_code = 404

    def __init__(self, name: str, known: Sequence[str]) -> None:
        super().__init__(f"unknown policy {name!r}; known policies: {sorted(known)} (GET /v1/policies)")
        self.name = name


class NotReadyError(PolicyServiceError):
    """The policy registry has not loaded yet (start-up) ."""

    status_code = 503


class UnsupportedMediaTypeError(PolicyServiceError):
    """The request body is not declared as UTF-8 JSON (``Content-Type: application/json``)."""

    status_code = 415


def format_validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """``[{loc, msg, type}]`` (the OpenAPI ``ValidationError`` shape) from pydantic/FastAPI error dicts.

    JSON-safe: no ``input`` and no ``ctx`` objects; ``loc`` holds strings and integers only.
    """
    out = []
    for e in errors:
        msg = str(e.get("msg", "invalid"))
        if e.get("type") == "json_invalid" and isinstance(e.get("ctx"), dict) and e["ctx"].get("error"):
            msg = f"{msg}: {e['ctx']['error']}"
        loc = [p if isinstance(p, int) and not isinstance(p, bool) else str(p) for p in e.get("loc", ())]
        out.append({"loc": loc, "msg": msg, "type": str(e.get("type", ""))})
    return out


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": format_validation_errors(exc.errors())}, status_code=422)


async def _disconnect_handler(request: Request, exc: Exception) -> Response:
    log.debug("client hung up before its request to %s was read", request.url.path)
    return Response(status_code=CLIENT_CLOSED_STATUS)  # uvicorn drops it: the connection is gone


async def _service_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PolicyServiceError)
    return JSONResponse({"detail": str(exc)}, status_code=exc.status_code)


async def _unhandled_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error; see the server log"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers above on ``app``."""
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(ClientDisconnect, _disconnect_handler)
    app.add_exception_handler(PolicyServiceError, _service_error_handler)
    app.add_exception_handler(Exception, _unhandled_handler)
