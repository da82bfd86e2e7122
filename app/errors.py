"""The API's error catalogue: each class carries the HTTP status and the `code` clients see.

Raise these anywhere below the HTTP layer; `create_app` turns them into
`{"error": {"code", "message"}}` with the class's status (API.md, Conventions).
"""

from __future__ import annotations


class ApiError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_json(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}

    def headers(self) -> dict[str, str]:
        """Response headers that go with this error (every path that answers it adds them)."""
        return {}


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"

    def headers(self) -> dict[str, str]:
        # RFC 6750 section 3: a 401 names the scheme; a token that was sent and refused says so.
        challenge = 'Bearer realm="parley"'
        if self.code in ("invalid_token", "token_expired"):
            challenge += ', error="invalid_token"'
        return {"WWW-Authenticate": challenge}


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"


class InvalidField(ApiError):
    status = 422
    code = "invalid_field"


class RateLimited(ApiError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class Unavailable(ApiError):
    status = 503
    code = "unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "2"}
