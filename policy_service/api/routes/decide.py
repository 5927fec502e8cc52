"""``POST /v1/decide``: a job's telemetry window in, the setting for its next interval out.

This is the hot path, so the route does by hand what FastAPI's dependency and body machinery would do
(measured in ``mango bench service``):

* the route is a :class:`DirectRoute`: FastAPI calls the endpoint with the ``Request`` as is, without its
  per-request dependency solving (a sub-response, background tasks, the parameter walk) and without
  response validation; the middleware, the exception handlers and the OpenAPI operation are the same as
  for any route;
* the two headers it reads are found in one pass over the raw header list, and the body is read from the
  ASGI ``receive`` directly (``Request.body`` goes through an async generator; a client that hangs up
  still raises ``ClientDisconnect``, counted as 499);
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
* the response: :meth:`policy_service.service.DecisionService.decide_json`'s bytes in a plain ``Response``
  (an unshielded answer is serialized once per policy version and setting, then reused).

The OpenAPI document still describes the body as ``DecideRequest`` (see ``openapi_extra`` and
:func:`policy_service.main.create_app`, which adds the model's schema to the components).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from client.protocol import DecideRequest, Decision

from ...errors import UnsupportedMediaTypeError
from ...jsonlimits import MAX_JSON_DEPTH, JSONLimitError, loads_bounded
from ...schemas import ErrorMessage
from ..deps import authenticate

__all__ = ["DirectRoute", "check_json_content_type", "parse_decide_request", "read_body", "router"]


class DirectRoute(APIRoute):
    """An ``APIRoute`` whose endpoint is called with the ``Request`` and must return a ``Response``.

    FastAPI's usual handler solves the endpoint's dependencies per request (even with none declared it
    builds a sub-response, background tasks and walks the parameters) and validates what the endpoint
    returns; this one calls the endpoint directly. Everything around the handler is FastAPI's as for any
    route: matching, the middleware, the exception handlers (an exception raised by the endpoint becomes the
    same 401 / 415 / 422 response) and the OpenAPI operation, built from the route's declaration
    (``response_model``, ``responses``, ``openapi_extra``). Use it only for an endpoint that declares no
    dependencies and no parameters but the ``Request``.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint  # type: ignore[no-any-return]


router = APIRouter(tags=["decide"], route_class=DirectRoute)

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


async def read_body(request: Request) -> bytes:
    """The whole request body from the ASGI messages; ``ClientDisconnect`` if the client hangs up first."""
    chunks: list[bytes] = []
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


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
    key = content_type = None
    for name, value in request.scope["headers"]:  # the first of each, as Request.headers.get gives
        if name == b"x-api-key" and key is None:
            key = value.decode("latin-1")
        elif name == b"content-type" and content_type is None:
            content_type = value.decode("latin-1")
    authenticate(request, key)  # before the body is read
    check_json_content_type(content_type)
    state = request.app.state
    body = parse_decide_request(await read_body(request), max_bytes=state.settings.max_body_bytes)
    # On the event loop: a decision is a fraction of a millisecond of CPU, less than a thread hop costs.
    return Response(state.service.decide_json(body), media_type="application/json")
