"""`GET /ws`: the WebSocket transport (API.md, Streams), a thin adapter on `StreamSession`.

Handshake: the `Origin` is checked (Quart does no check of its own, PITFALLS), then the caller
is authenticated and authorized exactly like `/stream`; any refusal is a plain HTTP response,
so a forbidden page never gets an upgrade. After the upgrade:

- server -> client: event envelopes (each event's JSON text is built once, `Event.text`), plus
  control messages without an `id`, which never move a cursor:
  `{"type":"hello","heartbeat_s"}` once, `{"type":"heartbeat"}` every `PARLEY_HEARTBEAT_S`
  (browsers cannot see WebSocket pings, so the page's loss detection needs a message),
  `{"type":"subscribed"|"unsubscribed","discussion_id"}`, `{"type":"pong"}`,
  `{"type":"error","code","message"}`.
- client -> server: `subscribe`, `unsubscribe`, `auth`, `resume`, `ping`, `typing`
  (`discussion_id`, `typing`: bool) and `presence` (`status`: online|away, this connection's).
- A malformed message gets an `error` and the connection stays usable. Frames over Hypercorn's
  `websocket_max_message_size` (app/cli.py) are refused by Hypercorn with close code 1009.
- Close codes: 4001 token expired (refresh with `auth` before that), 4008 fell too far behind
  (resume from the cursor on a new connection), 1009 message too big (Hypercorn).

One coroutine owns the session: it waits for whichever comes first, a client message or live
events, so `resume` can swap the subscription without racing a sender. Disconnect arrives as
`CancelledError`; `finally` releases the subscription either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, cast
from urllib.parse import urlsplit

from quart import Blueprint, Response, jsonify, websocket

from ..errors import ApiError
from ..events import Event
from ..hub import SlowConsumer
from ..presence import STATUSES, Status
from ..services import Services, services
from ..session import MAX_DISCUSSIONS_PER_CONNECTION, StreamSession
from ..text import unstorable_text
from .common import authorized_session

blueprint = Blueprint("ws", __name__)

CLOSE_TOKEN_EXPIRED = 4001
CLOSE_SLOW_CONSUMER = 4008


class BadMessage(Exception):
    """A client message we cannot act on; answered with an `error`, the connection stays."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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


def _control(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))


def _error(code: str, message: str) -> str:
    return _control("error", code=code, message=message)


@blueprint.websocket("/ws")
async def ws() -> Response | None:
    allowed = services().settings.allowed_origins
    if not origin_allowed(websocket.headers.get("Origin"), websocket.headers.get("Host"), allowed):
        response = jsonify({"error": {"code": "forbidden_origin", "message": "this origin may not open a WebSocket"}})
        response.status_code = 403
        return response
    try:
        parley, session = await authorized_session(websocket.args.getlist("discussion"))
    except ApiError as error:
        response = jsonify(error.to_json())
        response.status_code = error.status
        response.headers.update(error.headers())
        return response
    await websocket.accept()
    connections = parley.metrics.connections.labels(transport="ws")
    connections.inc()
    try:
        await _serve(parley, session)
    finally:
        session.close()
        connections.dec()
    return None


async def _send_events(events: list[Event]) -> None:
    for event in events:
        await websocket.send(event.text)


async def _serve(parley: Services, session: StreamSession) -> None:
    heartbeat_s = parley.settings.heartbeat_s
    await websocket.send(_control("hello", heartbeat_s=heartbeat_s))
    await _send_events(await session.open(websocket.args.get("last_event_id")))
    receiving: asyncio.Task[str | bytes] = asyncio.ensure_future(websocket.receive())
    try:
        while True:
            remaining_s = session.seconds_until_expiry()
            if remaining_s <= 0:
                await websocket.send(session.auth_expired().text)
                await websocket.close(CLOSE_TOKEN_EXPIRED, "token expired")
                return
            waiting = asyncio.ensure_future(session.next_events(min(heartbeat_s, remaining_s)))
            done, _ = await asyncio.wait({receiving, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if waiting not in done:
                # Buffered events stay in the subscription; the next wait hands them out.
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError, SlowConsumer):
                    await waiting
            else:
                try:
                    events = waiting.result()
                except SlowConsumer:
                    await websocket.close(CLOSE_SLOW_CONSUMER, "too far behind: resume from your cursor")
                    return
                if events:
                    await _send_events(events)
                elif receiving not in done:
                    await websocket.send(_control("heartbeat"))
            if receiving in done:
                message = receiving.result()
                receiving = asyncio.ensure_future(websocket.receive())
                await _handle(parley, session, message)
    finally:
        receiving.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await receiving


async def _handle(parley: Services, session: StreamSession, raw: str | bytes | None) -> None:
    try:
        reply = await _dispatch(parley, session, _parse(raw))
    except BadMessage as bad:
        await websocket.send(_error(bad.code, bad.message))
        return
    if isinstance(reply, str):
        await websocket.send(reply)
    elif reply:
        await _send_events(reply)


def _parse(raw: str | bytes | None) -> dict[str, Any]:
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
    return message


def _string(message: dict[str, Any], name: str, max_chars: int = 8192) -> str:
    value = message.get(name)
    if not isinstance(value, str) or not value or len(value) > max_chars:
        raise BadMessage("invalid_field", f"{name}: a non-empty string is required")
    return value


async def _dispatch(parley: Services, session: StreamSession, message: dict[str, Any]) -> str | list[Event]:
    kind = message["type"]
    if kind == "ping":
        return _control("pong")
    if kind == "typing":
        typing = message.get("typing")
        if not isinstance(typing, bool):
            raise BadMessage("invalid_field", "typing: true or false")
        try:
            await session.set_typing(_string(message, "discussion_id", 200), typing)
        except ApiError as error:
            raise BadMessage(error.code, error.message) from None
        return []  # others see it as typing_started/typing_stopped; floods are throttled, silently
    if kind == "presence":
        status = message.get("status")
        if not isinstance(status, str) or status not in STATUSES:  # a list or object is unhashable
            raise BadMessage("invalid_field", f"status: one of {sorted(STATUSES)}")
        await session.set_status(cast(Status, status))
        return []
    if kind == "resume":
        return await session.resume(_string(message, "last_event_id", 200))
    if kind == "auth":
        try:
            identity = await parley.auth.verify(_string(message, "token"))
            session.refresh(identity)
        except ApiError as error:
            raise BadMessage(error.code, error.message) from None
        except ValueError as error:
            raise BadMessage("forbidden", str(error)) from None
        return _control("auth_ok", expires_at=int(identity.expires_at))
    if kind in ("subscribe", "unsubscribe"):
        discussion_id = _string(message, "discussion_id", 200)
        if kind == "unsubscribe":
            session.remove_discussion(discussion_id)
            return _control("unsubscribed", discussion_id=discussion_id)
        if len(session.discussion_ids) >= MAX_DISCUSSIONS_PER_CONNECTION:
            raise BadMessage("invalid_field", f"at most {MAX_DISCUSSIONS_PER_CONNECTION} discussions per connection")
        try:
            await parley.read_access.check(parley.db, session.identity, discussion_id)
        except ApiError as error:
            raise BadMessage(error.code, error.message) from None
        session.add_discussion(discussion_id)
        return _control("subscribed", discussion_id=discussion_id)
    raise BadMessage("unknown_type", f"unknown message type {kind[:40]!r}")
