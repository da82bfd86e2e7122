"""`GET /ws`: the WebSocket transport (API.md, Streams), a thin adapter on `StreamSession`.

Handshake: the `Origin` is checked (Quart does no check of its own, PITFALLS), then the caller
is authenticated and authorized exactly like `/stream`; any refusal is a plain HTTP response,
so a forbidden page never gets an upgrade. After the upgrade:

- server -> client: event envelopes (each event's JSON text is built once, `Event.text`), plus
  control messages without an `id`, which never move a cursor:
  `{"type":"hello","heartbeat_s","expires_in_s"}` once, `{"type":"heartbeat"}` when nothing else
  was sent for `PARLEY_HEARTBEAT_S` (browsers cannot see WebSocket pings, so the page's loss
  detection needs a message; counted from the last send, so a chatty client gets them too),
  `{"type":"subscribed"|"unsubscribed","discussion_id"}`, `{"type":"pong"}`,
  `{"type":"error","code","message"}`.
- client -> server: `subscribe`, `unsubscribe`, `auth`, `resume`, `ping`, `typing`
  (`discussion_id`, `typing`: bool) and `presence` (`status`: online|away, this connection's).
- A malformed message gets an `error` and the connection stays usable. Frames over Hypercorn's
  `websocket_max_message_size` (app/cli.py) are refused by Hypercorn with close code 1009.
- Close codes: 4001 token expired (refresh with `auth` before that), 4008 fell too far behind
  (resume from the cursor on a new connection), 1009 message too big (Hypercorn), 1001 the
  server is stopping (reconnect, to another server), 4029 too many (mirrors HTTP 429): the
  user's open streams are at `PARLEY_MAX_STREAMS_PER_USER` (sent right after the upgrade, so
  a browser sees the code), or this connection sent more than
  `PARLEY_WS_CONNECTION_MESSAGES_PER_MIN` messages. Past the user's own limits (all of their
  messages, `typing`, `presence`) a message is refused with an `error` (`rate_limited`,
  `retry_after_s`) and the connection stays.

One coroutine owns the session: it waits for whichever comes first, a client message or the
session's next step (`StreamSession.next`: events, a heartbeat, the end), so `resume` can swap
the subscription without racing a sender. Disconnect arrives as
`CancelledError`; `finally` releases the subscription either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any
from urllib.parse import urlsplit

from quart import Blueprint, Response, websocket

from app.core.services import Services, services
from app.core.session import MAX_DISCUSSIONS_PER_CONNECTION, Deliver, End, StreamSession
from app.core.stream_slots import TooManyStreams
from app.errors import ApiError, Forbidden, RateLimited
from app.infra.ratelimit import Rate
from app.infra.ratelimit_memory import MemoryRateLimiter
from app.log.events import Event
from app.transports.common import STREAM_ERRORS, TRANSIENT_ERRORS, StreamQuery, authorized_session
from app.transports.ws_messages import (
    AnyClientMessage,
    AnyControl,
    AuthMessage,
    AuthOk,
    BadMessage,
    ClientMessage,
    Heartbeat,
    Hello,
    MessageError,
    PingMessage,
    Pong,
    PresenceMessage,
    ResumeMessage,
    Subscribed,
    SubscribeMessage,
    TypingMessage,
    Unsubscribed,
    UnsubscribeMessage,
    parse_client_message,
)
from app.web.contract import documented
from app.web.error_response import error_response, quart_response
from app.web.event_schemas import AnyEvent
from app.web.requests import query_args

blueprint = Blueprint("ws", __name__)

CLOSE_TOKEN_EXPIRED = 4001
CLOSE_SLOW_CONSUMER = 4008
CLOSE_GOING_AWAY = 1001
CLOSE_TOO_MANY = 4029
# RFC 6455 "Try Again Later": a backing service (Redis, the database) is unreachable for now.
CLOSE_TRY_AGAIN_LATER = 1013
HEARTBEAT = Heartbeat().text()
# What the server sends: events, or control messages (which carry no `id`).
AnyServerMessage: Any = AnyEvent | AnyControl


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    """`PARLEY_ALLOWED_ORIGINS` when set (`*` allows any), else same-origin only.

    Same-origin compares the Origin's host:port with the Host header and ignores the scheme: a
    TLS-terminating proxy makes the app see http while the page is https. No Origin at all is a
    non-browser client (curl, a service), which cross-site protection is not about.
    """
    if origin is None:
        return True
    origin = origin.strip().rstrip("/").lower()
    if allowed:
        return "*" in allowed or origin in {a.strip().rstrip("/").lower() for a in allowed}
    netloc = urlsplit(origin).netloc
    return bool(netloc) and host is not None and netloc == host.strip().lower()


def _error(code: str, message: str) -> str:
    return MessageError(code=code, message=message).text()


@blueprint.websocket("/ws")
@documented(
    "The WebSocket transport",
    description="Upgrade to a WebSocket carrying the same envelopes as `/stream` (server -> client), plus "
    "control messages without an `id`; the client sends typing, presence, subscribe/unsubscribe, auth, resume "
    "and ping messages. The `Origin` must be the page's own (or in `PARLEY_ALLOWED_ORIGINS`). Refusals are plain "
    "HTTP answers before the upgrade.",
    query=StreamQuery,
    response=None,
    status=101,
    errors=[*STREAM_ERRORS, (Forbidden, "forbidden_origin")],
    messages={"client": AnyClientMessage, "server": AnyServerMessage},
    extensions={
        "x-websocket-close-codes": {
            str(CLOSE_TOKEN_EXPIRED): "token expired: refresh with an `auth` message before that",
            str(CLOSE_SLOW_CONSUMER): "fell too far behind: resume from your cursor on a new connection",
            "1009": "message too big",
        }
    },
)
async def ws() -> Response | None:
    allowed = services().settings.allowed_origins
    if not origin_allowed(websocket.headers.get("Origin"), websocket.headers.get("Host"), allowed):
        refused = Forbidden("this origin may not open a WebSocket", code="forbidden_origin")
        return quart_response(error_response(refused))
    try:
        wanted = query_args(StreamQuery)
        parley, session = await authorized_session(wanted.discussion)
    except TooManyStreams as error:
        # Refused after the upgrade: a browser's WebSocket cannot see an HTTP status, a close code it can.
        await websocket.accept()
        await websocket.send(MessageError(code=error.code, message=error.message).text())
        await websocket.close(CLOSE_TOO_MANY, "too many open streams")
        return None
    except ApiError as error:
        return quart_response(error_response(error))
    except TRANSIENT_ERRORS:
        await _try_again_later(accept=True)
        return None
    await websocket.accept()
    connections = parley.metrics.connections.labels(transport="ws")
    connections.inc()
    try:
        await _serve(parley, session, wanted.last_event_id)
    except TRANSIENT_ERRORS:
        await _try_again_later(accept=False)
    finally:
        session.close()
        connections.dec()
    return None


async def _try_again_later(*, accept: bool) -> None:
    """Close with 1013: the client reconnects later and resumes from its cursor."""
    with contextlib.suppress(Exception):
        if accept:
            await websocket.accept()
        await websocket.close(CLOSE_TRY_AGAIN_LATER, "unavailable for now: reconnect later")


async def _send_events(events: list[Event]) -> None:
    for event in events:
        await websocket.send(event.text)


# How each end of a session closes the socket (End.reason -> code, reason).
CLOSES = {
    "auth_expired": (CLOSE_TOKEN_EXPIRED, "token expired"),
    "idle": (CLOSE_SLOW_CONSUMER, "idle: reconnect when back"),
    "dropped": (CLOSE_SLOW_CONSUMER, "too far behind: resume from your cursor"),
    "stopping": (CLOSE_GOING_AWAY, "server stopping: reconnect"),
}


async def _serve(parley: Services, session: StreamSession, resume: str | None) -> None:
    flood = MessageFlood(parley.settings.ws_connection_messages_per_min)
    expires_in_s = round(session.seconds_until_expiry(), 1)
    await websocket.send(Hello(heartbeat_s=parley.node.heartbeat_s, expires_in_s=expires_in_s).text())
    await _send_events(await session.open(resume))
    receiving: asyncio.Task[str | bytes] = asyncio.ensure_future(websocket.receive())
    try:
        while True:
            waiting = asyncio.ensure_future(session.next())
            done, _ = await asyncio.wait({receiving, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if waiting not in done:
                # Cancelling loses nothing: buffered events stay for the next `next()`.
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting
            else:
                step = waiting.result()
                if isinstance(step, End):
                    if step.notice is not None:
                        await websocket.send(step.notice.text)
                    await websocket.close(*CLOSES[step.reason])
                    return
                if isinstance(step, Deliver):
                    await _send_events(step.events)
                else:
                    await websocket.send(HEARTBEAT)
            if receiving in done:
                message = receiving.result()
                receiving = asyncio.ensure_future(websocket.receive())
                if flood.exceeded():
                    await websocket.send(_error("rate_limited", "too many messages on this connection"))
                    await websocket.close(CLOSE_TOO_MANY, "too many messages")
                    return
                if await _handle(parley, session, message):
                    session.wrote()  # a reply counts: the heartbeat is due heartbeat_s after it
    finally:
        receiving.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await receiving


class MessageFlood:
    """One connection's message budget (GCRA, in this process: no round trip per message)."""

    def __init__(self, per_minute: int) -> None:
        self._rate = Rate.per_minute(per_minute)
        self._limiter = MemoryRateLimiter(max_keys=1)

    def exceeded(self) -> bool:
        return self._rate is not None and self._limiter.try_acquire("messages", self._rate) > 0


async def _handle(parley: Services, session: StreamSession, raw: str | bytes | None) -> bool:
    """Act on one client message; True when something was sent back."""
    try:
        await parley.rate_limit.hit(session.identity.user_id, "ws_message")
        reply = await _dispatch(parley, session, parse_client_message(raw))
    except RateLimited as limited:
        # The message is dropped; the client may send again after `retry_after_s`.
        error = {"type": "error", "code": limited.code, "message": limited.message}
        await websocket.send(json.dumps(error | {"retry_after_s": limited.retry_after_s}, separators=(",", ":")))
        return True
    except BadMessage as bad:
        await websocket.send(_error(bad.code, bad.message))
        return True
    if isinstance(reply, str):
        await websocket.send(reply)
    elif reply:
        await _send_events(reply)
    return bool(reply)


async def _dispatch(parley: Services, session: StreamSession, message: ClientMessage) -> str | list[Event]:
    if isinstance(message, PingMessage):
        return Pong().text()
    if isinstance(message, TypingMessage):
        await parley.rate_limit.hit(session.identity.user_id, "typing")  # RateLimited: answered by _handle
        try:
            await session.set_typing(message.discussion_id, message.typing)
        except ApiError as error:
            raise BadMessage(error.code, error.message) from None
        return []  # others see it as typing_started/typing_stopped; floods are throttled, silently
    if isinstance(message, PresenceMessage):
        await parley.rate_limit.hit(session.identity.user_id, "presence")
        await session.set_status(message.status)
        return []
    if isinstance(message, ResumeMessage):
        return await session.resume(message.last_event_id)
    if isinstance(message, AuthMessage):
        try:
            identity = await parley.auth.verify(message.token)
            session.refresh(identity)
        except ApiError as error:
            raise BadMessage(error.code, error.message) from None
        except ValueError as error:
            raise BadMessage("forbidden", str(error)) from None
        return AuthOk(
            expires_at=int(identity.expires_at), expires_in_s=round(identity.expires_at - time.time(), 1)
        ).text()
    if isinstance(message, UnsubscribeMessage):
        session.remove_discussion(message.discussion_id)
        return Unsubscribed(discussion_id=message.discussion_id).text()
    if not isinstance(message, SubscribeMessage):
        raise BadMessage("unknown_type", f"unknown message type {type(message).__name__!r}")
    if len(session.discussion_ids) >= MAX_DISCUSSIONS_PER_CONNECTION:
        raise BadMessage("invalid_field", f"at most {MAX_DISCUSSIONS_PER_CONNECTION} discussions per connection")
    try:
        await parley.read_access.check(parley.db, session.identity, message.discussion_id)
    except ApiError as error:
        raise BadMessage(error.code, error.message) from None
    session.add_discussion(message.discussion_id)
    return Subscribed(discussion_id=message.discussion_id).text()
