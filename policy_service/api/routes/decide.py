"""``POST /v1/decide``: a job's telemetry window in, the setting for its next interval out.

This is the hot path, so the route does by hand what FastAPI's dependency and body machinery would do, at
about a third of the CPU cost (measured in ``mango bench service``):

* the ``X-API-Key`` check (the same constant-time comparison as :mod:`..deps`);
* ``Content-Type`` must be ``application/json`` (``charset``, if given, ``utf-8``): anything else is 415,
  so a form, XML or UTF-16 body is never guessed at;
* parsing: ``DecideRequest.model_validate_json`` (pydantic-core's parser, depth-limited) on the raw bytes.
  It rejects the non-standard ``NaN``/``Infinity`` literals as malformed JSON without naming the field, so on
  a JSON error the body is re-parsed with the service's bounded parser (:mod:`policy_service.jsonlimits`:
  UTF-8, size and depth checked before ``json.loads``) and validated again, giving the field-named message
  (``history.2.loss: Input should be a finite number``). Only invalid requests pay for it;
* strict validation: a JSON type the document does not declare is refused, not coerced (``false`` for a
  number, ``"3"`` for an integer), so a body that breaks the schema never gets a 200;
* the response: ``Decision.model_dump_json`` into a plain ``Response`` (no re-validation of the model).

The OpenAPI document still describes the body as ``DecideRequest`` (see ``openapi_extra`` and
:func:`policy_service.main.create_app`, which adds the model's schema to the components).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from client.protocol import DecideRequest, Decision

from ...errors import UnsupportedMediaTypeError
from ...jsonlimits import MAX_JSON_DEPTH, JSONLimitError, loads_bounded
from ...schemas import ErrorMessage
from ..deps import authenticate

router = APIRouter(tags=["decide"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorMessage, "description": "missing or invalid X-API-Key"},
    404: {
        "model": ErrorMessage,
        "description": "unknown policy (the message names it and lists the known ones)",
    },
    413: {"model": ErrorMessage, "description": "body larger than MANGO_MAX_BODY_BYTES"},
    415: {"model": ErrorMessage, "description": "Content-Type is not application/json (UTF-8)"},
    422: {  # FastAPI's own component, the shape of every 422 of the service (policy_service.errors)
        "description": "invalid request; `detail` lists each failing field (loc, msg, type)",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}},
    },
    503: {"model": ErrorMessage, "description": "policies still loading"},
}

_OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DecideRequest"}}},
    },
    "security": [{"APIKeyHeader": []}],
}


def check_json_content_type(content_type: str | None) -> None:
    """``UnsupportedMediaTypeError`` (415) unless ``content_type`` is ``application/json`` in UTF-8."""
    media, _, params = (content_type or "").partition(";")
    if media.strip().lower() != "application/json":
        raise UnsupportedMediaTypeError(
            f"Content-Type {content_type or '(none)'!r} is not supported; send the body as "
            "'application/json' (UTF-8)"
        )
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise UnsupportedMediaTypeError(
                f"charset {value.strip()!r} is not supported; JSON bodies must be UTF-8 (RFC 8259)"
            )


def parse_decide_request(raw: bytes, *, max_bytes: int = 1 << 20) -> DecideRequest:
    """Validate a raw body; ``RequestValidationError`` (422) names the failing fields."""
    try:
        return DecideRequest.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if not any(e["type"] == "json_invalid" for e in errors):
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None
    try:  # NaN / Infinity literals: Python's parser reads them, so validation can name the field
        data = loads_bounded(raw, max_bytes=max_bytes, max_depth=MAX_JSON_DEPTH)
    except JSONLimitError as exc:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body",),
                    "msg": "JSON decode error",
                    "ctx": {"error": str(exc)},
                }
            ]
        ) from None
    try:
        return DecideRequest.model_validate(data, strict=True)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


@router.post("/v1/decide", response_model=Decision, responses=_ERRORS, openapi_extra=_OPENAPI_BODY)
async def decide(request: Request) -> Response:
    """Pick the compression setting (rank, bits, gamma) for the job's next control interval.

    ``history`` is the job's newest 1..8 telemetry records, oldest first; ``policy`` names a learned policy,
    a heuristic or ``default``. The answer says which policy decided, its version, and whether the safety
    shield overrode it (``shielded``, with the ``reason``). Needs ``X-API-Key`` (user or admin key).
    """
    authenticate(request, request.headers.get("x-api-key"))  # before the body is parsed
    check_json_content_type(request.headers.get("content-type"))
    body = parse_decide_request(await request.body(), max_bytes=request.app.state.settings.max_body_bytes)
    # On the event loop: a decision is a fraction of a millisecond of CPU, less than a thread hop costs.
    decision = request.app.state.service.decide(body)
    return Response(decision.model_dump_json(), media_type="application/json")
