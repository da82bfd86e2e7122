"""What every handler needs: the caller's identity, a validated JSON body and query string."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar, get_origin

from pydantic import BaseModel, ValidationError
from quart import g, has_websocket_context, request, websocket

from ..auth import Identity, token_from
from ..errors import BadRequest, InvalidField, PayloadTooLarge, Unauthorized
from ..services import services

Model = TypeVar("Model", bound=BaseModel)


async def caller(*, remember_now: bool = True) -> Identity:
    """The authenticated caller, or 401. Also upserts the user from the token's claims: before
    going on, or (`remember_now=False`, for stream connects) in the background."""
    identity: Identity | None = g.get("identity")
    if identity is not None:
        return identity
    # A WebSocket handshake has no `request`; its headers and cookies are on `websocket`.
    incoming = websocket if has_websocket_context() else request
    token = token_from(incoming.headers, incoming.cookies)
    if token is None:
        raise Unauthorized("sign in: send a bearer token or the parley_token cookie", code="unauthenticated")
    parley = services()
    identity = await parley.auth.verify(token)
    if remember_now:
        await parley.users.remember(identity)
    else:
        parley.users.remember_soon(identity)
    g.identity = identity
    return identity


def _invalid(error: ValidationError) -> InvalidField:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return InvalidField(f"{where}: {first['msg']}")


def query_args(model: type[Model]) -> Model:
    """This request's query string as `model` (see `parse_query`)."""
    args = websocket.args if has_websocket_context() else request.args
    return parse_query(model, args.getlist)


def parse_query(model: type[Model], getlist: Callable[[str], list[str]]) -> Model:
    """A query string as `model`, 422 if a parameter is wrong. A field typed as a list takes
    every repeat of its parameter (`?discussion=a&discussion=b`); any other takes the first,
    and an empty value counts as absent. The model describes the parameters in the OpenAPI
    document (`app.contract`); validation is lax: query values are all strings."""
    data: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        values = getlist(name)
        if get_origin(info.annotation) is list:
            if values:
                data[name] = values
        elif values and values[0] != "":
            data[name] = values[0]
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise _invalid(error) from None


async def json_body(model: type[Model]) -> Model:
    """Parse the body as JSON into `model`: 400 if it is not a JSON object, 422 if a field is wrong."""
    limit = services().settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body over {limit} bytes")
    raw = await request.get_data(cache=False)
    if len(raw) > limit:
        raise PayloadTooLarge(f"body over {limit} bytes")
    try:
        data: Any = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("body is not valid JSON", code="malformed_json") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object", code="malformed_json")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise _invalid(error) from None
