"""The service's exception family and the one place that maps exceptions to HTTP responses.

* ``RequestValidationError`` (a body that fails ``DecideRequest`` validation, or is not JSON) -> 422 with
  ``detail`` = ``"<field path>: <pydantic message>; ..."`` and ``errors`` = ``[{field, msg, type}]``.
  The raw input is never echoed (it may be large, or NaN, which JSON cannot carry).
* :class:`UnknownPolicyError` -> 404 naming the policy and the known ones; :class:`NotReadyError` -> 503.
* Anything else -> 500 with a generic message (the traceback goes to the log, not to the client).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

__all__ = [
    "NotReadyError",
    "PolicyServiceError",
    "UnknownPolicyError",
    "format_validation_errors",
    "install_error_handlers",
]

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


def _field(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":  # FastAPI prefixes body fields with "body"
        parts = parts[1:]
    return ".".join(parts) or "body"


def format_validation_errors(errors: Sequence[Any]) -> list[dict[str, str]]:
    """``[{field, msg, type}]`` from pydantic/FastAPI error dicts (JSON-safe: no input, no ctx objects)."""
    out = []
    for e in errors:
        msg = str(e.get("msg", "invalid"))
        if e.get("type") == "json_invalid" and isinstance(e.get("ctx"), dict) and e["ctx"].get("error"):
            msg = f"{msg}: {e['ctx']['error']}"
        out.append({"field": _field(e.get("loc", ())), "msg": msg, "type": str(e.get("type", ""))})
    return out


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = format_validation_errors(exc.errors())
    detail = "; ".join(f"{e['field']}: {e['msg']}" for e in errors)
    return JSONResponse({"detail": detail, "errors": errors}, status_code=422)


async def _service_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PolicyServiceError)
    return JSONResponse({"detail": str(exc)}, status_code=exc.status_code)


async def _unhandled_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error; see the server log"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers above on ``app``."""
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(PolicyServiceError, _service_error_handler)
    app.add_exception_handler(Exception, _unhandled_handler)
