"""``POST /v1/decide``: a job's telemetry window in, the setting for its next interval out.

This is the hot path, so the route does by hand what FastAPI's dependency and body machinery would do, at
about a third of the CPU cost (measured in ``mango bench service``):

* the ``X-API-Key`` check (the same constant-time comparison as :mod:`..deps`);
* parsing: ``DecideRequest.model_validate_json`` (pydantic-core's parser) on the raw bytes. It rejects the
  non-standard ``NaN``/``Infinity`` literals as malformed JSON without naming the field, so on a JSON error
  the body is re-parsed with ``json.loads`` (which reads them) and validated again, giving the field-named
  message (``history.2.loss: Input should be a finite number``). Only invalid requests pay for it;
* the response: ``Decision.model_dump_json`` into a plain ``Response`` (no re-validation of the model).

The OpenAPI document still describes the body as ``DecideRequest`` (see ``openapi_extra`` and
:func:`policy_service.main.create_app`, which adds the model's schema to the components).
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from client.protocol import DecideRequest, Decision

from ..deps import authenticate

router = APIRouter(tags=["decide"])

_ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "missing or invalid X-API-Key"},
    404: {"description": "unknown policy (the message names it and lists the known ones)"},
    413: {"description": "body larger than MANGO_MAX_BODY_BYTES"},
    422: {"description": "invalid request; `detail` names each failing field"},
    503: {"description": "policies still loading"},
}

_OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DecideRequest"}}},
    },
    "security": [{"APIKeyHeader": []}],
}


def parse_decide_request(raw: bytes) -> DecideRequest:
    """Validate a raw body; ``RequestValidationError`` (422) names the failing fields."""
    try:
        return DecideRequest.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if not any(e["type"] == "json_invalid" for e in errors):
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None
    try:  # NaN / Infinity literals: Python's parser reads them, so validation can name the field
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
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
        return DecideRequest.model_validate(data)
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
    body = parse_decide_request(await request.body())
    # On the event loop: a decision is a fraction of a millisecond of CPU, less than a thread hop costs.
    decision = request.app.state.service.decide(body)
    return Response(decision.model_dump_json(), media_type="application/json")
