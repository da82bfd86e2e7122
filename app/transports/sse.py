"""`GET /stream` on Quart/Hypercorn: Server-Sent Events (API.md, Streams; PITFALLS, "SSE and
HTTP/2"). The lean front serves the same stream (`lean_sse.py`); both frame with `web/sse_wire`.

The body is an async generator: the preamble, the missed events, then whatever the session
says next (`StreamSession.next`): live events, a heartbeat, or the end (`auth_expired`, without
an id line; `session_idle`; or nothing when the connection fell too far behind and the browser
resumes by `Last-Event-ID`). The heartbeat is a `:` comment, or with `?heartbeat=event` a
`heartbeat` event after a first `hello` one (`sse_wire.HeartbeatForm`). A client disconnect
arrives as `CancelledError`; the `finally` releases the session either way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from quart import Blueprint, Response, request

from app.core.services import Services
from app.core.session import Deliver, End, StreamSession
from app.transports.common import STREAM_ERRORS, TRANSIENT_ERRORS, SseQuery, authorized_session
from app.web import sse_wire
from app.web.contract import documented
from app.web.requests import query_args
from app.web.sse_wire import HeartbeatForm

blueprint = Blueprint("sse", __name__)
log = logging.getLogger(__name__)


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
        return Response(sse_wire.retry_later(), headers=sse_wire.SSE_HEADERS)
    # Browsers send Last-Event-ID only on their own reconnects; a page that rebuilt its
    # EventSource passes its stored cursor in the query instead.
    resume = request.headers.get("Last-Event-ID") or wanted.last_event_id
    form = sse_wire.heartbeat_form(wanted.heartbeat)
    response = Response(sse_body(parley, session, resume, form), headers=sse_wire.SSE_HEADERS)
    response.timeout = None  # Quart's RESPONSE_TIMEOUT would end the stream after 60 s.
    return response


async def sse_body(
    parley: Services, session: StreamSession, resume: str | None, form: HeartbeatForm
) -> AsyncIterator[bytes]:
    connections = parley.metrics.connections.labels(transport="sse")
    connections.inc()
    try:
        try:
            missed = await session.open(resume)
        except TRANSIENT_ERRORS as error:
            log.warning("stream refused for now, the client will retry: %s", error)
            yield sse_wire.retry_later()
            return
        # Dropped for falling behind while blocked in a send to a client that stopped reading:
        # cancel this handler, so the connection is closed and its buffers freed.
        handler = asyncio.current_task()
        if handler is not None:
            session.call_on_drop(handler.cancel)
        preamble = form.preamble(parley.node.heartbeat_s, session.seconds_until_expiry())
        yield preamble + b"".join(event.sse for event in missed)
        while True:
            step = await session.next()
            if isinstance(step, End):
                if step.notice is not None:
                    yield sse_wire.last_words(step)
                return
            yield b"".join(event.sse for event in step.events) if isinstance(step, Deliver) else form.heartbeat
    finally:
        session.close()
        connections.dec()
