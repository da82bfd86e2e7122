"""`GET /stream`: Server-Sent Events (API.md, Streams; PITFALLS, "SSE and HTTP/2").

The body is an async generator: a preamble (`retry:` and a comment, so proxies and PaaS routers
see a first byte at once), the missed events, then live events or a `:` heartbeat every
`PARLEY_HEARTBEAT_S`. With `?heartbeat=event` the preamble ends with a `hello` event and each
heartbeat is a `heartbeat` event (`HeartbeatForm`): EventSource cannot see comments. It ends
when the token expires (`auth_expired`), or when the connection falls too far behind (the
browser reconnects and resumes by `Last-Event-ID`). A client disconnect arrives as
`CancelledError`; the `finally` releases the subscription either way.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator

from quart import Blueprint, Response, request

from app.core.hub import SlowConsumer
from app.core.services import Services
from app.core.session import StreamSession
from app.log.events import sse_frame
from app.transports.common import STREAM_ERRORS, TRANSIENT_ERRORS, SseQuery, authorized_session
from app.transports.ws_messages import Heartbeat, Hello
from app.web.contract import documented
from app.web.requests import query_args

blueprint = Blueprint("sse", __name__)
log = logging.getLogger(__name__)

RETRY_MS = 2_000
PREAMBLE = f"retry: {RETRY_MS}\n: connected\n\n".encode()
HEARTBEAT = b": heartbeat\n\n"
# `?heartbeat=event`: 45 bytes every PARLEY_HEARTBEAT_S (default 30 s), well under 1 KB/min.
EVENT_HEARTBEAT = sse_frame(None, "heartbeat", Heartbeat().text().encode())
SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache, no-transform",
    # Tell nginx-style proxies not to buffer. No Transfer-Encoding: HTTP/2 forbids it.
    "X-Accel-Buffering": "no",
}
# After `retry_later`, reconnect after this long; random in the range, so the clients of a
# Redis that comes back do not all return in the same instant.
RETRY_LATER_MS = (2_000, 6_000)


def retry_later() -> bytes:
    """The whole body of a stream we cannot serve *now* (Redis unreachable, the server
    stopping): a `retry:` hint, no event, and the end.

    Never a 503: by the WHATWG rules an EventSource whose reconnection gets any status but 200
    (or a non-`text/event-stream` type) fails for good and never reconnects, so a plain
    EventSource (curl, a third-party page) would be lost for a passing fault. A 200 stream that
    ends makes it reconnect after `retry` ms, with its `Last-Event-ID`: it misses nothing.
    """
    return f"retry: {random.randint(*RETRY_LATER_MS)}\n: unavailable for now, reconnect\n\n".encode()


class HeartbeatForm:
    """How one stream shows it is alive: `:` comments (the default), or with `?heartbeat=event`
    a `hello` event first and `heartbeat` events, which an EventSource can see."""

    __slots__ = ("heartbeat", "visible")

    def __init__(self, form: str) -> None:
        self.visible = form == "event"
        self.heartbeat = EVENT_HEARTBEAT if self.visible else HEARTBEAT

    def preamble(self, heartbeat_s: float, session: StreamSession) -> bytes:
        if not self.visible:
            return PREAMBLE
        hello = Hello(heartbeat_s=heartbeat_s, expires_in_s=round(session.seconds_until_expiry(), 1))
        return PREAMBLE + sse_frame(None, "hello", hello.text().encode())


@blueprint.get("/stream")
@documented(
    "The event stream (Server-Sent Events)",
    description="Each event is `id: <cursor>`, `event: <type>`, `data: <envelope>` (the `Event` schema). Starts "
    "with a `retry:` line; a `:` comment heartbeat every `PARLEY_HEARTBEAT_S` seconds (with `heartbeat=event`: a "
    "`hello` event first, then `heartbeat` events). A cursor that is unknown or "
    "older than the retained log yields one `sync_required` event. An expired token ends the stream with "
    "`auth_expired`.",
    query=SseQuery,
    headers={"Last-Event-ID": "resume after this cursor (sent by browsers on their own reconnects)"},
    media_type="text/event-stream",
    errors=STREAM_ERRORS,
    extensions={"x-stream-events": {"$ref": "#/components/schemas/Event"}},
)
async def stream() -> Response:
    wanted = query_args(SseQuery)
    try:
        parley, session = await authorized_session(wanted.discussion)
    except TRANSIENT_ERRORS as error:
        log.warning("stream refused for now, the client will retry: %s", error)
        return Response(retry_later(), headers=SSE_HEADERS)
    # Browsers send Last-Event-ID only on their own reconnects; a page that rebuilt its
    # EventSource passes its stored cursor in the query instead.
    resume = request.headers.get("Last-Event-ID") or wanted.last_event_id
    response = Response(sse_body(parley, session, resume, HeartbeatForm(wanted.heartbeat)), headers=SSE_HEADERS)
    response.timeout = None  # Quart's RESPONSE_TIMEOUT would end the stream after 60 s.
    return response


async def sse_body(
    parley: Services, session: StreamSession, resume: str | None, form: HeartbeatForm
) -> AsyncIterator[bytes]:
    connections = parley.metrics.connections.labels(transport="sse")
    heartbeat_s = parley.settings.heartbeat_s
    connections.inc()
    try:
        try:
            missed = await session.open(resume)
        except TRANSIENT_ERRORS as error:
            log.warning("stream refused for now, the client will retry: %s", error)
            yield retry_later()
            return
        # Dropped for falling behind while blocked in a send to a client that stopped reading:
        # cancel this handler, so the connection is closed and its buffers freed.
        handler = asyncio.current_task()
        if handler is not None:
            session.subscription.on_drop = handler.cancel
        yield form.preamble(heartbeat_s, session) + b"".join(event.sse for event in missed)
        while True:
            remaining_s = session.seconds_until_expiry()
            if remaining_s <= 0:
                yield session.auth_expired().sse_without_id
                return
            try:
                events = await session.next_events(min(heartbeat_s, remaining_s))
            except SlowConsumer:
                return
            yield b"".join(event.sse for event in events) if events else form.heartbeat
    finally:
        session.close()
        connections.dec()
