"""`GET /poll`: the long-poll transport (API.md, Streams), a thin adapter on `StreamSession`.

For clients behind proxies that buffer SSE and block WebSocket upgrades. Each request opens a
session from `cursor`, answers `{"events": [...], "cursor": "<cursor>"}` as soon as anything is
there, or with no events when `timeout` seconds pass, and closes the session. The next request
resumes from the returned cursor, so nothing is lost between polls: the log keeps it. A garbage
or unknown cursor yields a `sync_required` event, exactly as on `/stream`. No cursor means
"from now on" (the response's cursor is the head of the log).
"""

from __future__ import annotations

import json
import time

from quart import Blueprint, Response, request

from ..errors import InvalidField
from ..events import Event
from ..hub import SlowConsumer
from ..session import StreamSession
from .common import authorized_session

blueprint = Blueprint("poll", __name__)

DEFAULT_TIMEOUT_S = 25.0
# Below the ~30 s first-byte and 55 s idle windows of PaaS routers (PITFALLS).
MAX_TIMEOUT_S = 30.0


def _timeout_arg(text: str | None) -> float:
    if text in (None, ""):
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        raise InvalidField(f"timeout: seconds from 0 to {MAX_TIMEOUT_S:g}") from None
    if not 0 <= value <= MAX_TIMEOUT_S:  # also refuses nan
        raise InvalidField(f"timeout: seconds from 0 to {MAX_TIMEOUT_S:g}")
    return value


@blueprint.get("/poll")
async def poll() -> Response:
    timeout_s = _timeout_arg(request.args.get("timeout"))
    parley, session = await authorized_session(request.args.getlist("discussion"))
    connections = parley.metrics.connections.labels(transport="poll")
    connections.inc()
    try:
        cursor = request.args.get("cursor") or None
        events = await session.open(cursor)
        if not events:
            events = await _wait(session, timeout_s)
        # `auth_expired` carries no new position (it must not move the client's cursor).
        positioned = [event for event in events if event.type != "auth_expired"]
        if positioned:
            cursor = positioned[-1].cursor
        elif cursor is None:
            cursor = str(await parley.log.head())
    finally:
        session.close()
        connections.dec()
    return _body(events, cursor)


async def _wait(session: StreamSession, timeout_s: float) -> list[Event]:
    deadline = time.monotonic() + timeout_s
    while (left_s := deadline - time.monotonic()) > 0:
        if session.seconds_until_expiry() <= 0:
            return [session.auth_expired()]
        try:
            events = await session.next_events(min(left_s, max(session.seconds_until_expiry(), 0.01)))
        except SlowConsumer:
            # Dropped while waiting: answer now; the client's next poll resumes by cursor.
            return []
        if events:
            return events
    return []


def _body(events: list[Event], cursor: str) -> Response:
    # Each event's JSON text is built once and shared by every reader; only splice it here.
    # The cursor is a log cursor or the client's own text: json-quote it.
    text = '{"events":[' + ",".join(event.text for event in events) + '],"cursor":' + json.dumps(cursor) + "}"
    response = Response(text, content_type="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response
