"""Errors in OpenAI's shape, `{"error": {"message", "type", "code", "param"}}`, and statuses."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from muxtui.engine.errors import (
    AuthError,
    BadRequestError,
    LocalServerError,
    MuxtuiError,
    ProviderError,
    RateLimitedError,
    UnknownModelError,
    UnreachableError,
)
from muxtui.engine.redact import redact

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class ServeError(Exception):
    """An error to answer with: HTTP status, OpenAI error code and a one-line message."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def error_body(status: int, message: str, code: str) -> bytes:
    """The JSON body of an error answer."""
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    error = {"message": message, "type": kind, "code": code, "param": None}
    return json.dumps({"error": error}).encode()


def from_engine(exc: MuxtuiError, secrets: Iterable[str]) -> ServeError:
    """The answer for an engine error (upstream failures mapped to 429/502/503/504)."""
    message = redact(str(exc), secrets)
    if isinstance(exc, UnknownModelError):
        return ServeError(404, message, "model_not_found")
    if isinstance(exc, RateLimitedError):
        return ServeError(429, message, "rate_limited")
    if isinstance(exc, AuthError):  # our key for the provider was refused: not the client's fault
        return ServeError(502, message, "upstream_auth_failed")
    if isinstance(exc, BadRequestError):
        status = exc.status if exc.status in (400, 404, 413, 422) else 400
        return ServeError(status, message, "upstream_bad_request")
    if isinstance(exc, UnreachableError):
        timed_out = "Timeout" in message or "stopped answering" in message
        return ServeError(504 if timed_out else 502, message, "upstream_unreachable")
    if isinstance(exc, LocalServerError):
        return ServeError(503, message, "local_server_failed")
    if isinstance(exc, ProviderError) and exc.status == 503:
        return ServeError(503, message, "upstream_unavailable")
    return ServeError(502, message, "upstream_error")


def may_fall_back(exc: MuxtuiError) -> bool:
    """Whether a fallback model may answer instead: not when the request itself was refused."""
    return not isinstance(exc, BadRequestError | UnknownModelError)


def parse_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object; a `ServeError` 400 otherwise."""
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ServeError(400, "the body is not a JSON object", "invalid_json")
    return body


def error_response(error: ServeError) -> web.Response:
    """An OpenAI-shaped error answer."""
    return web.Response(
        body=error_body(error.status, error.message, error.code),
        status=error.status,
        content_type="application/json",
    )
