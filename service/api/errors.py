"""Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, built in one place.

Every failure a client can cause maps to a 4xx with the offending parameter named; anything else is a 5xx in the
same shape, so a client library always gets an error it can parse.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from strategies.names import STRATEGY_NAMES

log = logging.getLogger(__name__)

STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable_error",
}


TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "bytes", "body"})

UNAVAILABLE_RETRY_AFTER_S = 5
"""A 503 is temporary (an engine starting or being replaced, its node coming back, Redis reconnecting): it always
says when to try again, so clients (the openai library honours `Retry-After`) back off instead of failing."""


class APIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        if status == 503 and headers is None:
            headers = {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)}
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, param=self.param, code=self.code)

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=headers or self.headers)


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    kind = STATUS_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# The tagged unions of the request bodies: field -> the tags that pick a member (which pydantic puts in locations).
FORMAT_TYPES = ("text", "json_object", "json_schema")
UNION_TAGS: dict[str | None, tuple[str, ...]] = {
    "strategy": STRATEGY_NAMES,
    "rollout": STRATEGY_NAMES,
    "response_format": FORMAT_TYPES,
    "format": FORMAT_TYPES,
    "input": ("message", "function_call", "function_call_output", "reasoning"),
}


def param_path(loc: tuple[Any, ...]) -> str | None:
    """('messages', 0, 'content') -> 'messages[0].content'. Union members appear in pydantic's locations as type tags
    ('str', 'list[int]', 'function-after[...]') and, for a tagged union (`UNION_TAGS`), as its tag; they are not
    parameters, so they are left out."""
    path, field = "", None  # `field`: the union a tag may come next for (right after its name or an index of it)
    for step in loc:
        if isinstance(step, int):
            path += f"[{step}]"
        elif step in UNION_TAGS.get(field, ()):
            field = None
        elif isinstance(step, str) and step.isidentifier() and step not in TYPE_TAGS:
            path += f".{step}" if path else step
            field = step
    return path or None


def from_validation_error(exc: ValidationError | RequestValidationError) -> APIError:
    # A value that matches no member of a union fails once per member; the deepest failure is the telling one.
    first = max(exc.errors(), key=lambda e: len(e.get("loc", ())))
    loc = tuple(first.get("loc", ()))
    if first.get("type") in ("union_tag_invalid", "union_tag_not_found"):  # name the field that picks the member
        loc += (str(first.get("ctx", {}).get("discriminator", "")).strip("'"),)
    param = param_path(loc)
    message = first.get("msg", "invalid request")
    if first.get("type") == "extra_forbidden":
        message = "Unrecognized request argument supplied"
    elif first.get("type") == "missing":
        message = "Missing required parameter"
    text = f"{message}: {param}" if param else message
    return APIError(400, text, param=param, code=str(first.get("type", "invalid_value")))


def failed(request: Request, error: APIError) -> APIError:
    """Notes the error on the request's ledger entry (generation routes have one) and returns it."""
    entry = getattr(request.state, "entry", None)
    if entry is not None:
        entry.fail(error.status, error.message, error.code)
    return error


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return failed(request, exc).response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return failed(request, from_validation_error(exc)).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            message = f"Unknown route {request.method} {request.url.path}"
        return APIError(exc.status_code, message).response(headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return failed(request, APIError(500, "Internal server error", code="internal_error")).response()
