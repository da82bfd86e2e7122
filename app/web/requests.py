"""What every handler needs: the caller's identity, a validated JSON body and query string,
and ids and page sizes parsed one way (issue 11, item 6).

Numbers from the URL are ASCII digits only: `str.isdigit()` is true for "²" and other Unicode
digits that `int()` refuses (that was a 500 on five endpoints). Query models type them with
`NumericId` and `PageSize`; a numeric id in the path goes through `numeric_id_in_path`.
Text that no database stores as given (`app/text.py`) is refused with 422 wherever it comes
in: JSON bodies, path parameters and query values here, WebSocket messages in `ws.py`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar, get_origin

from pydantic import AfterValidator, BaseModel, BeforeValidator, StringConstraints, ValidationError
from quart import g, has_websocket_context, request, websocket

from app.auth import Identity, token_from
from app.core.services import Services, services
from app.domain.access import readable_discussion
from app.domain.users import DELETED_USER_ID
from app.errors import BadRequest, Forbidden, InvalidField, NotFound, PayloadTooLarge, Unauthorized
from app.text import storable, unstorable_text

Model = TypeVar("Model", bound=BaseModel)

# A numeric id (response ids): ASCII digits, and within the INTEGER columns that hold them
# (PostgreSQL refuses a larger parameter outright; that was a 500 too).
NUMERIC_ID_PATTERN = r"^[0-9]{1,10}$"
MAX_NUMERIC_ID = 2**31 - 1
_NUMERIC_ID = re.compile(NUMERIC_ID_PATTERN)
_WHOLE_NUMBER = re.compile(r"^[0-9]{1,9}$")


def numeric_id(text: str | None) -> int | None:
    """The id `text` spells in ASCII digits, or None if it is not one."""
    if text is None or _NUMERIC_ID.match(text) is None or int(text) > MAX_NUMERIC_ID:
        return None
    return int(text)


def numeric_id_in_path(text: str, what: str) -> int:
    """A numeric id from the path: one that cannot exist is 404, like one that does not."""
    value = numeric_id(text)
    if value is None:
        raise NotFound(f"no {what} {text[:40]!r}")
    return value


def _in_id_range(text: str) -> str:
    if int(text) > MAX_NUMERIC_ID:
        raise ValueError(f"an id is at most {MAX_NUMERIC_ID}")
    return text


def _ascii_whole_number(value: object) -> object:
    # Pydantic's lax int also takes "+1", " 1", "1.0" and "1_0"; a URL says digits.
    if isinstance(value, str) and _WHOLE_NUMBER.match(value) is None:
        raise ValueError("must be a whole number written with the digits 0-9")
    return value


# A numeric id in a query string or a body: a string of ASCII digits (`numeric_id` reads it).
NumericId = Annotated[str, StringConstraints(pattern=NUMERIC_ID_PATTERN), AfterValidator(_in_id_range)]
# A page size or other count in a query string (bound it with Field(ge=..., le=...)).
PageSize = Annotated[int, BeforeValidator(_ascii_whole_number)]


async def caller(*, remember_now: bool = True) -> Identity:
    """The authenticated caller of this Quart request or WebSocket handshake (`authenticate`),
    remembered for the rest of the request."""
    identity: Identity | None = g.get("identity")
    if identity is not None:
        return identity
    # A WebSocket handshake has no `request`; its headers and cookies are on `websocket`.
    incoming = websocket if has_websocket_context() else request
    identity = await authenticate(incoming.headers, incoming.cookies, parley=services(), remember_now=remember_now)
    g.identity = identity
    return identity


async def authenticate(
    headers: Mapping[str, str] | Any, cookies: Mapping[str, str], *, parley: Services, remember_now: bool = True
) -> Identity:
    """The caller a request's headers and cookies name (a bearer token or the cookie), or 401;
    403 for the deleted-user placeholder. Also upserts the user from the token's claims: before
    going on, or (`remember_now=False`, for stream connects) in the background. The one place
    both the Quart handlers and the lean stream front authenticate."""
    token = token_from(headers, cookies)
    if token is None:
        raise Unauthorized("sign in: send a bearer token or the parley_token cookie", code="unauthenticated")
    identity = await parley.auth.verify(token)
    if identity.user_id == DELETED_USER_ID:
        raise Forbidden("this account cannot be used", code="forbidden")
    if remember_now:
        await parley.users.remember(identity)
    else:
        parley.users.remember_soon(identity)
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
    document (`app.web.contract`); validation is lax: query values are all strings."""
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
    except RecursionError:
        raise BadRequest("body is nested too deeply", code="malformed_json") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object", code="malformed_json")
    refuse_unstorable(data)
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise _invalid(error) from None


def refuse_unstorable(value: Any, where: str = "body") -> None:
    found = unstorable_text(value, where)
    if found is not None:
        raise InvalidField(f"{found}: text may not contain NUL characters or unpaired surrogates")


async def refuse_unstorable_url() -> None:
    """Before every request and WebSocket: path parameters and query values must be storable
    text too (a discussion id with %00 reached PostgreSQL)."""
    incoming = websocket if has_websocket_context() else request
    view_args = incoming.view_args
    if view_args:
        for name, value in view_args.items():
            if isinstance(value, str) and not storable(value):
                refuse_unstorable(value, name)
    if incoming.query_string:  # most requests have none: no query dict parsed for them
        for name, value in incoming.args.items(multi=True):
            refuse_unstorable(value, name)


async def ensure_readable(identity: Identity, discussion_id: str) -> None:
    """404 unless the caller may read the discussion (`access.readable_discussion`), for
    handlers that need nothing else from the database."""
    async with services().db.read_session() as session:
        await readable_discussion(session, identity, discussion_id)
