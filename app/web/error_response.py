"""Error -> answer, written once: the Quart handlers (`app/main.py`), the WebSocket refusal
before the upgrade and the lean front's raw HTTP/1.1 answers all go through `error_response`.

The body is always `{"error": {"code", "message"}}` (API.md, Conventions); the headers are the
error's own (`ApiError.headers()`: `WWW-Authenticate`, `Retry-After`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from quart import Response, jsonify
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException

from app.errors import ApiError

log = logging.getLogger(__name__)

# Werkzeug's own errors (routing, the body size cap) under our codes.
HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 400: "bad_request"}


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


def error_response(error: BaseException) -> ErrorAnswer:
    """What to answer for `error`. Logs what is not the client's doing (503, 500)."""
    if isinstance(error, ApiError):
        return ErrorAnswer(error.status, error.code, error.message, error.headers())
    if isinstance(error, HTTPException):
        status = error.code or 500
        return ErrorAnswer(status, HTTP_CODES.get(status, "http_error"), error.description or "")
    if isinstance(error, RedisError):
        # Redis (event log, rate limits) unreachable: retryable, and the client is told so.
        log.error("redis unavailable: %s", error)
        return ErrorAnswer(503, "unavailable", "a backing service is unreachable; retry", {"Retry-After": "2"})
    log.error("unhandled error", exc_info=error)
    return ErrorAnswer(500, "internal_error", "something went wrong on our side")


def quart_response(answer: ErrorAnswer) -> Response:
    response = jsonify(answer.json())
    response.status_code = answer.status
    response.headers.update(answer.headers)
    return response


async def handle(error: Exception) -> Response:
    """The Quart error handler for every error (`create_app` registers it)."""
    return quart_response(error_response(error))


def http11(answer: ErrorAnswer) -> bytes:
    """A complete HTTP/1.1 answer that closes the connection (the lean front has no Quart)."""
    body = json.dumps(answer.json(), separators=(",", ":")).encode()
    lines = [
        f"HTTP/1.1 {answer.status} {HTTPStatus(answer.status).phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in answer.headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
