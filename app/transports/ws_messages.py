"""The WebSocket's own messages (API.md, Streams), as pydantic models.

Client -> server messages are validated with these models (`CLIENT_MESSAGES[type]`), and the
server's control messages are serialized from them, so the OpenAPI description of `/ws`
(`x-websocket`) is the code's own. Events themselves are envelopes (`app.web.event_schemas`).
Control messages carry no `id`: they never move a cursor.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from app.presence.store import Status
from app.text import unstorable_text

DiscussionId = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class ClientMessage(BaseModel):
    # Strict: `"typing": "yes"` is refused, not read as true. Unknown fields are ignored.
    model_config = ConfigDict(strict=True)


class SubscribeMessage(ClientMessage):
    """Start reading one more discussion (live events only: resume for what came before)."""

    type: Literal["subscribe"]
    discussion_id: DiscussionId


class UnsubscribeMessage(ClientMessage):
    type: Literal["unsubscribe"]
    discussion_id: DiscussionId


class TypingMessage(ClientMessage):
    """Throttled, never an error; others see `typing_started` / `typing_stopped`."""

    type: Literal["typing"]
    discussion_id: DiscussionId
    typing: bool


class PresenceMessage(ClientMessage):
    """This connection's status: page visible (`online`) or hidden (`away`)."""

    type: Literal["presence"]
    status: Status


class AuthMessage(ClientMessage):
    """A fresh token for this connection, before the old one expires (close code 4001)."""

    type: Literal["auth"]
    token: Annotated[str, StringConstraints(min_length=1, max_length=8192)]


class ResumeMessage(ClientMessage):
    """Replay what came after this cursor (or `sync_required` when it is gone)."""

    type: Literal["resume"]
    last_event_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class PingMessage(ClientMessage):
    type: Literal["ping"]


CLIENT_MESSAGES: Mapping[str, type[ClientMessage]] = {
    "subscribe": SubscribeMessage,
    "unsubscribe": UnsubscribeMessage,
    "typing": TypingMessage,
    "presence": PresenceMessage,
    "auth": AuthMessage,
    "resume": ResumeMessage,
    "ping": PingMessage,
}
AnyClientMessage: Any = Annotated[Union[tuple(CLIENT_MESSAGES.values())], Field(discriminator="type")]  # noqa: UP007


class Control(BaseModel):
    def text(self) -> str:
        return self.model_dump_json()


class Hello(Control):
    """Sent once, first: how often to expect a message at least (a client that heard nothing for
    longer, plus a few seconds, may treat the connection as dropped), and when the token expires.
    Also the first event of `GET /stream?heartbeat=event`."""

    type: Literal["hello"] = "hello"
    heartbeat_s: float
    expires_in_s: float | None = Field(
        default=None, description="seconds until the token expires: refresh it before (`auth`, or reconnect)"
    )


class Heartbeat(Control):
    """When nothing else was sent for `heartbeat_s` (browsers cannot see WebSocket pings)."""

    type: Literal["heartbeat"] = "heartbeat"


class Subscribed(Control):
    type: Literal["subscribed"] = "subscribed"
    discussion_id: str


class Unsubscribed(Control):
    type: Literal["unsubscribed"] = "unsubscribed"
    discussion_id: str


class Pong(Control):
    type: Literal["pong"] = "pong"


class AuthOk(Control):
    type: Literal["auth_ok"] = "auth_ok"
    expires_at: int = Field(description="the new token's expiry, Unix seconds")
    expires_in_s: float | None = Field(default=None, description="seconds until it expires (no clock skew)")


class MessageError(Control):
    """A message the server cannot act on; the connection stays usable."""

    type: Literal["error"] = "error"
    code: str = Field(
        description="`malformed_json`, `malformed_message`, `unknown_type`, `invalid_field`, or an API error's "
        "code (`not_found`, `invalid_token`, `token_expired`, `forbidden`)"
    )
    message: str


CONTROL_MESSAGES = (Hello, Heartbeat, Subscribed, Unsubscribed, Pong, AuthOk, MessageError)
AnyControl: Any = Annotated[Union[CONTROL_MESSAGES], Field(discriminator="type")]  # noqa: UP007


class BadMessage(Exception):
    """A client message we cannot act on; answered with an `error`, the connection stays."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_client_message(raw: str | bytes | None) -> ClientMessage:
    """One client frame as its model; `BadMessage` (answered with an `error`) if it is not one."""
    if raw is None:  # Quart hands an empty binary frame over as None (found by tests/test_fuzz_ws.py)
        raise BadMessage("malformed_json", "messages are JSON objects")
    try:
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadMessage("malformed_json", "messages are JSON objects") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise BadMessage("malformed_message", 'a message is an object with a string "type"')
    found = unstorable_text(message, "message")
    if found is not None:
        raise BadMessage("invalid_field", f"{found}: text may not contain NUL characters or unpaired surrogates")
    model = CLIENT_MESSAGES.get(message["type"])
    if model is None:
        raise BadMessage("unknown_type", f"unknown message type {message['type'][:40]!r}")
    try:
        return model.model_validate(message)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "message"
        raise BadMessage("invalid_field", f"{where}: {first['msg']}") from None
