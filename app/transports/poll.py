"""`GET /poll`: the long-poll transport (API.md, Streams), a thin adapter on `StreamSession`.

For clients behind proxies that buffer SSE and block WebSocket upgrades. Each request opens a
session from `cursor`, answers `{"events": [...], "cursor": "<cursor>"}` as soon as anything is
there, or with no events when `timeout` seconds pass, and closes the session. The next request
resumes from the returned cursor, so nothing is lost between polls: the log keeps it. A garbage
or unknown cursor yields a `sync_required` event, exactly as on `/stream`. No cursor means
"from now on" (the response's cursor is the head of the log).
"""

from __future__ import annotations

import asyncio
import json

from pydantic import BaseModel, Field
from quart import Blueprint, Response

from app.core.session import MAX_DISCUSSIONS_PER_CONNECTION, Deliver, End, StreamSession
from app.log.events import Event
from app.transports.common import STREAM_ERRORS, authorized_session
from app.web.contract import documented
from app.web.event_schemas import AnyEvent
from app.web.requests import query_args
from app.web.wire import Shape

blueprint = Blueprint("poll", __name__)

DEFAULT_TIMEOUT_S = 25.0
# Below the ~30 s first-byte and 55 s idle windows of PaaS routers (PITFALLS).
MAX_TIMEOUT_S = 30.0


class PollQuery(BaseModel):
    discussion: list[str] = Field(
        default_factory=list,
        max_length=MAX_DISCUSSIONS_PER_CONNECTION,
        description="a discussion to read (repeat for several)",
    )
    cursor: str | None = Field(default=None, description="the `cursor` of the previous answer; none: from now on")
    timeout: float = Field(
        default=DEFAULT_TIMEOUT_S, ge=0, le=MAX_TIMEOUT_S, allow_inf_nan=False, description="seconds to wait"
    )


class PollResult(Shape):
    events: list[AnyEvent] = Field(description="oldest first; empty when `timeout` passed first")
    cursor: str = Field(description="send it back as `cursor` on the next poll")


@blueprint.get("/poll")
@documented(
    "Long-poll for events",
    description="Answers as soon as there are events, or with none when `timeout` passes. Garbage or unknown "
    "cursors yield a `sync_required` event, as on `/stream`.",
    query=PollQuery,
    response=PollResult,
    errors=STREAM_ERRORS,
)
async def poll() -> Response:
    wanted = query_args(PollQuery)
    timeout_s = wanted.timeout
    parley, session = await authorized_session(wanted.discussion)
    connections = parley.metrics.connections.labels(transport="poll")
    connections.inc()
    try:
        cursor = wanted.cursor
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
    """The first events within `timeout_s`, or the end's notice (`auth_expired`, `session_idle`);
    none when the time passes or the session was dropped (the next poll resumes by cursor)."""
    if timeout_s <= 0:
        return []
    try:
        async with asyncio.timeout(timeout_s):
            while True:  # heartbeats are the other transports' concern: a poll just waits on
                step = await session.next()
                if isinstance(step, Deliver):
                    return step.events
                if isinstance(step, End):
                    return [] if step.notice is None else [step.notice]
    except TimeoutError:
        return []


def _body(events: list[Event], cursor: str) -> Response:
    # Each event's JSON text is built once and shared by every reader; only splice it here.
    # The cursor is a log cursor or the client's own text: json-quote it.
    text = '{"events":[' + ",".join(event.text for event in events) + '],"cursor":' + json.dumps(cursor) + "}"
    response = Response(text, content_type="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response
