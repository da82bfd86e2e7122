"""Each route declares its contract next to itself, with `@documented(...)`.

    @blueprint.post("/api/discussions")
    @documented(
        "Create a discussion",
        body=NewDiscussion,          # the model `json_body(NewDiscussion)` validates with
        response=DiscussionOut,      # what a success answers (pydantic model or type, e.g. list[X])
        status=201,
        errors=[NotFound, (Conflict, "response_deleted")],
        roles=["admin"],             # who may call it (documented as `x-roles`; 403 implied)
        fires=["response_posted"],   # event types a success publishes (`x-fires-events`)
    )
    async def create_discussion() -> ...: ...

The OpenAPI document (`app.api.openapi.build`) is made from these declarations and from the very
models the handlers validate with (`json_body(Model)`, `query_args(Model)`), so the description
cannot drift from what is enforced. The decorator returns the function itself (it only attaches
the declaration), so its place among the route decorators does not matter.

Errors are listed by class (its default `code`) or as `(class, "code")` for a specific code.
What every caller can meet is added for you: 401 (`unauthenticated`, `invalid_token`,
`token_expired`) unless `auth=False`; 403 `forbidden` with `roles`; 400/413/422 for a `body`;
422 for a `query`; on every route, `internal_error` (500), `unavailable` (503, a backing
service is unreachable) and 422 (unstorable text in the path or query); on every state change,
the edge's 403 `cross_site_request` and 415 `unsupported_media_type` (`app/web/http_security.py`).
With `PARLEY_CHECK_RESPONSES=1`, every answer is checked against its declaration
(`check_response`): tests turn it on so a handler that answers something undeclared fails.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError
from quart import Response, current_app, request

from app.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    InvalidField,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from app.log.events import EVENT_TYPES

View = TypeVar("View", bound=Callable[..., Any])
log = logging.getLogger(__name__)

ATTRIBUTE = "__parley_operation__"
JSON = "application/json"

ErrorSpec = type[ApiError] | tuple[type[ApiError], str]

AUTH_ERRORS: tuple[tuple[type[ApiError], str], ...] = (
    (Unauthorized, "unauthenticated"),
    (Unauthorized, "invalid_token"),
    (Unauthorized, "token_expired"),
)
BODY_ERRORS: tuple[tuple[type[ApiError], str], ...] = (
    (BadRequest, "malformed_json"),
    (PayloadTooLarge, "payload_too_large"),
    (InvalidField, "invalid_field"),
)
QUERY_ERRORS: tuple[tuple[type[ApiError], str], ...] = ((InvalidField, "invalid_field"),)
# Any route, whatever it declares: a bug (500) or an unreachable database or Redis (503), and
# a path or query value no database can store (NUL, an unpaired surrogate: `app/text.py`).
ALWAYS_POSSIBLE: tuple[tuple[int, str], ...] = (
    (500, "internal_error"),
    (Unavailable.status, Unavailable.code),
    (InvalidField.status, InvalidField.code),
)
# What the edge (`app/web/http_security.py`) answers to any state change before the route runs.
STATE_CHANGE_ERRORS: tuple[tuple[int, str], ...] = (
    (Forbidden.status, "cross_site_request"),
    (UnsupportedMediaType.status, UnsupportedMediaType.code),
)
STATE_CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True, slots=True)
class Reply:
    """One success answer: its status, its body's type (None: no JSON body) and media type."""

    status: int
    schema: Any = None
    media_type: str = JSON
    description: str = ""


@dataclass(frozen=True, slots=True)
class Operation:
    summary: str
    description: str
    replies: tuple[Reply, ...]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    # Request headers that change the answer (name -> what for); documented, not validated.
    headers: Mapping[str, str] = field(default_factory=dict)
    errors: tuple[tuple[int, str], ...] = ()
    auth: bool = True
    roles: tuple[str, ...] = ()
    # Event types a successful call publishes.
    fires: tuple[str, ...] = ()
    # A WebSocket's messages after the upgrade: {"client": type, "server": type}.
    messages: Mapping[str, Any] = field(default_factory=dict)
    # Extra OpenAPI fields (`x-...`) for what the rest cannot say.
    extensions: Mapping[str, Any] = field(default_factory=dict)

    def reply_for(self, status: int) -> Reply | None:
        return next((reply for reply in self.replies if reply.status == status), None)

    def error_codes(self, method: str = "GET") -> dict[int, list[str]]:
        """Status -> the codes this route may answer with it for `method`, declared and implied.
        A status the route declares as a reply (e.g. `/readyz`'s 503) is that reply, not an error."""
        codes: dict[int, list[str]] = {}
        edge = STATE_CHANGE_ERRORS if method.upper() in STATE_CHANGING_METHODS else ()
        for status, code in (*self.errors, *ALWAYS_POSSIBLE, *edge):
            if self.reply_for(status) is not None:
                continue
            listed = codes.setdefault(status, [])
            if code not in listed:
                listed.append(code)
        return dict(sorted(codes.items()))


def _error_pairs(specs: Iterable[ErrorSpec]) -> list[tuple[int, str]]:
    pairs = []
    for spec in specs:
        kind, code = spec if isinstance(spec, tuple) else (spec, spec.code)
        if not (isinstance(kind, type) and issubclass(kind, ApiError)):
            raise TypeError(f"errors: {spec!r} is not an ApiError class or (class, code)")
        pairs.append((kind.status, code))
    return pairs


def describe(
    summary: str,
    *,
    response: Any = None,
    status: int = 200,
    media_type: str = JSON,
    also: Mapping[int, Any] | None = None,
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    headers: Mapping[str, str] | None = None,
    errors: Iterable[ErrorSpec] = (),
    auth: bool = True,
    roles: Iterable[str] = (),
    fires: Iterable[str] = (),
    description: str = "",
    messages: Mapping[str, Any] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> Operation:
    """A route's contract. `response`/`status`/`media_type`: the main success answer
    (`response=None` with the JSON media type: no body); `also`: other success statuses and
    their bodies (e.g. a 201 that is sometimes a 200)."""
    roles, fires = tuple(roles), tuple(fires)
    unknown = set(fires) - EVENT_TYPES
    if unknown:
        raise ValueError(f"fires: {sorted(unknown)} not in app.events.EVENT_TYPES")
    replies = [Reply(status, response, media_type)]
    replies += [Reply(other, schema, media_type) for other, schema in (also or {}).items()]
    implied: list[tuple[type[ApiError], str]] = []
    if auth:
        implied += AUTH_ERRORS
    if body is not None:
        implied += BODY_ERRORS
    if query is not None:
        implied += QUERY_ERRORS
    if roles:
        implied.append((Forbidden, Forbidden.code))
    return Operation(
        summary=summary,
        description=description,
        replies=tuple(sorted(replies, key=lambda reply: reply.status)),
        body=body,
        query=query,
        headers=dict(headers or {}),
        errors=tuple(dict.fromkeys([*_error_pairs(implied), *_error_pairs(errors)])),
        auth=auth,
        roles=roles,
        fires=fires,
        messages=dict(messages or {}),
        extensions=dict(extensions or {}),
    )


def documented(summary: str, *, description: str | None = None, **contract: Any) -> Callable[[View], View]:
    """Attach the route's contract (`describe`'s arguments) to its view function.
    `description` defaults to the view's docstring."""

    def attach(view: View) -> View:
        text = description if description is not None else _docstring(view)
        setattr(view, ATTRIBUTE, describe(summary, description=text, **contract))
        return view

    return attach


def _docstring(view: Callable[..., Any]) -> str:
    text = view.__doc__ or ""
    return " ".join(text.split())


def operation_of(view: Callable[..., Any] | None) -> Operation | None:
    operation: Operation | None = getattr(view, ATTRIBUTE, None)
    return operation


# By identity: a declaration's types live as long as the process (and some are unhashable).
_adapters: dict[int, TypeAdapter[Any]] = {}


def _adapter(schema: Any) -> TypeAdapter[Any]:
    adapter = _adapters.get(id(schema))
    if adapter is None:
        adapter = _adapters[id(schema)] = TypeAdapter(schema)
    return adapter


def media_matches(declared: str, content_type: str) -> bool:
    """`text/html` matches `text/html; charset=utf-8`; `*/*` and `text/*` are ranges."""
    actual = content_type.split(";")[0].strip().lower()
    kind, _, sub = declared.partition("/")
    return declared in ("*/*", actual) or (sub == "*" and actual.startswith(kind + "/"))


def check_response(operation: Operation, status: int, content_type: str, data: Any, method: str = "GET") -> str | None:
    """Why this answer breaks the route's contract, or None if it keeps it. `data` is the
    decoded JSON body (ignored for other media types)."""
    reply = operation.reply_for(status)
    if reply is not None:
        if not media_matches(reply.media_type, content_type):
            return f"content type {content_type!r}, declared {reply.media_type!r}"
        if reply.media_type != JSON or reply.schema is None:
            return None
        try:
            _adapter(reply.schema).validate_python(data, strict=False)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "body"
            return f"{where}: {first['msg']}"
        return None
    if status < 400:
        return f"status {status} is not declared"
    code = data.get("error", {}).get("code") if isinstance(data, dict) else None
    if code not in operation.error_codes(method).get(status, []):
        return f"error {status} {code!r} is not declared"
    return None


async def enforce_contract(response: Response) -> Response:
    """An `after_request` hook (`PARLEY_CHECK_RESPONSES=1`): a JSON answer that breaks its
    route's declaration becomes a 500 that says why. Streams and files are left alone."""
    view = current_app.view_functions.get(request.endpoint or "")
    operation = operation_of(view)
    content_type = response.content_type or ""
    # HEAD and OPTIONS are answered by the framework for every route; 204 and 304 have no body
    # (so no content type to check), but a 204 must still be the status the route declares.
    if operation is None or request.method in ("HEAD", "OPTIONS") or response.status_code == 304:
        return response
    if response.status_code == 204 and operation.reply_for(204) is not None:
        return response
    data = json.loads(await response.get_data()) if content_type.startswith(JSON) else None
    problem = check_response(operation, response.status_code, content_type, data, request.method)
    if problem is None:
        return response
    message = f"{request.method} {request.path} answered {response.status_code}, breaking its contract: {problem}"
    log.error("%s", message)
    broken = Response(
        json.dumps({"error": {"code": "internal_error", "message": message}}), status=500, content_type=JSON
    )
    return broken
