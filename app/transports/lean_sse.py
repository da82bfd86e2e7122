"""`GET /stream` on the lean front: the same stream as `sse.py`, with no task or timer per
connection once it is streaming.

A connection is authenticated and authorized (401/404/422 as JSON, like the Quart path) and
its session opened in one short-lived task; from then on it is a `LeanStream` protocol object:
the hub's `Subscription.push` calls its sink, which writes the event's pre-encoded chunk to
the transport. One process-wide timer (`LeanStreams`) sends heartbeats to idle connections and
ends streams whose token expired (`auth_expired`, without an id line). A connection whose
unsent bytes pass `LeanStreams.max_write_buffer` (max(64 KiB, max_buffered_events x 1 KiB))
is dropped (closed; the client resumes by `Last-Event-ID`) and counted as
`parley_dropped_consumers{reason="slow_consumer"}`.

The body is `Transfer-Encoding: chunked` (HTTP/1.1 only; HTTP/1.0 goes to Hypercorn): a
client and any proxy can tell a stream we ended (the last chunk) from one that broke, as with
Hypercorn's own framing, and the connection is closed after the last chunk. The chunk framing
is made once per event, not once per connection (`chunk_of`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Coroutine, Iterable
from typing import Any, cast
from urllib.parse import parse_qsl

from werkzeug.http import parse_cookie

from app.auth import token_from
from app.core.hub import SlowConsumer
from app.core.services import Services
from app.core.session import StreamSession
from app.errors import ApiError, Unauthorized
from app.log.events import Event
from app.transports.common import TRANSIENT_ERRORS, SseQuery, session_for
from app.transports.lean_http import RequestHead, error_response
from app.transports.sse import EVENT_HEARTBEAT, HEARTBEAT, SSE_HEADERS, HeartbeatForm, retry_later
from app.web.requests import parse_query

log = logging.getLogger(__name__)

RESPONSE_HEAD = (
    "HTTP/1.1 200 OK\r\n"
    + "".join(f"{name}: {value}\r\n" for name, value in SSE_HEADERS.items())
    + "Transfer-Encoding: chunked\r\n\r\n"
).encode("latin-1")
LAST_CHUNK = b"0\r\n\r\n"
# Least unsent bytes a connection may hold before it counts as a slow consumer.
MIN_WRITE_BUFFER_BYTES = 64 * 1024
# `max_buffered_events` is in events; on the lean path the backlog is bytes. Our frames are a
# few hundred bytes, so 1 KiB per event is a generous equivalent.
BYTES_PER_BUFFERED_EVENT = 1024
# The timer runs this many times per heartbeat interval; a connection gets a heartbeat after
# that many silent ticks, so the gap between writes stays within one heartbeat interval.
TICKS_PER_HEARTBEAT = 2


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


HEARTBEAT_CHUNK = chunk(HEARTBEAT)
EVENT_HEARTBEAT_CHUNK = chunk(EVENT_HEARTBEAT)


def retry_later_response() -> bytes:
    """A whole response telling the client to reconnect later (see `sse.retry_later`)."""
    return RESPONSE_HEAD + chunk(retry_later()) + LAST_CHUNK


def write(transport: asyncio.Transport, data: bytes) -> None:
    """Write, ignoring a transport that closed under us (a reset, before its
    `connection_lost` ran): uvloop raises RuntimeError there, asyncio drops the data. Raising
    into the hub's dispatch or the shared timer would stop them for every connection."""
    with contextlib.suppress(RuntimeError):
        transport.write(data)


class LeanStreams:
    """This process's lean streams: their one timer, their opening tasks, their shared bytes."""

    def __init__(self, parley: Services) -> None:
        self.parley = parley
        settings = parley.settings
        self.max_write_buffer = max(MIN_WRITE_BUFFER_BYTES, settings.max_buffered_events * BYTES_PER_BUFFERED_EVENT)
        self.connections = parley.metrics.connections.labels(transport="sse")
        self._tick_s = settings.heartbeat_s / TICKS_PER_HEARTBEAT
        self._streams: set[LeanStream] = set()
        # (expires_at epoch s, serial, stream); entries of closed streams are skipped when
        # popped, and the heap is rebuilt when they outnumber the live ones.
        self._expiries: list[tuple[float, int, LeanStream]] = []
        self._serial = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0  # epoch s
        self._next_heartbeat = 0.0  # loop time
        self._last_event: Event | None = None
        self._last_chunk = b""
        self._closed = False

    def open(self, transport: asyncio.Transport, request: RequestHead) -> None:
        """`lean_http`'s hand-off for a `GET /stream` head: the connection is ours now."""
        if self._closed:  # stopping: come back (to another server) later, never a 503
            write(transport, retry_later_response())
            transport.close()
            return
        LeanStream(self, transport, request)

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def chunk_of(self, event: Event) -> bytes:
        """The event's chunk. The hub hands one event to all its subscribers in a row, so a
        one-event cache encodes each event once."""
        if event is not self._last_event:
            self._last_chunk = chunk(event.sse)
            self._last_event = event
        return self._last_chunk

    def add(self, stream: LeanStream) -> None:
        self._streams.add(stream)
        expires_at = stream.expires_at
        self._serial += 1
        heapq.heappush(self._expiries, (expires_at, self._serial, stream))
        if len(self._expiries) > 2 * len(self._streams) + 64:
            self._expiries = [entry for entry in self._expiries if entry[2] in self._streams]
            heapq.heapify(self._expiries)
        if self._timer is None:
            self._next_heartbeat = asyncio.get_running_loop().time() + self._tick_s
            self._schedule()
        elif expires_at < self._timer_due:
            self._schedule()

    def discard(self, stream: LeanStream) -> None:
        self._streams.discard(stream)

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        now = time.time()
        due = now + max(0.0, self._next_heartbeat - loop.time())
        if self._expiries:
            due = min(due, self._expiries[0][0])
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        self._timer = loop.call_later(max(0.0, due - now), self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._closed:
            return
        now = time.time()
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            _, _, stream = heapq.heappop(expiries)
            if stream in self._streams:
                stream.expire()
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_heartbeat:
            self._next_heartbeat = loop.time() + self._tick_s
            for stream in tuple(self._streams):
                stream.tick()
        if self._streams:
            self._schedule()

    async def close(self) -> None:
        """Shutdown: end every stream (the browsers reconnect elsewhere), cancel the tasks."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for stream in tuple(self._streams):
            stream.end()
        tasks = tuple(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class LeanStream(asyncio.Protocol):
    """One `GET /stream` connection: the transport's protocol from its head onwards."""

    __slots__ = (
        "_counted",
        "_form",
        "_heartbeat_chunk",
        "_idle_ticks",
        "_session",
        "_streams",
        "_task",
        "_transport",
        "expires_at",
    )

    def __init__(self, streams: LeanStreams, transport: asyncio.Transport, request: RequestHead) -> None:
        self._streams = streams
        self._transport: asyncio.Transport | None = transport
        self._session: StreamSession | None = None
        self._counted = False
        self._idle_ticks = 0
        self._form = HeartbeatForm("comment")
        self._heartbeat_chunk = HEARTBEAT_CHUNK
        self.expires_at = 0.0
        transport.set_protocol(self)
        self._task: asyncio.Task[None] | None = streams.spawn(self._open(request))

    # -- opening: one short task ------------------------------------------------------------

    async def _open(self, request: RequestHead) -> None:
        try:
            missed = await self._authorize_and_open(request)
        except asyncio.CancelledError:
            # The connection was lost (nothing left to close) or the process is stopping.
            self._dropped()
            raise
        except ApiError as error:
            self._fail(error_response(error.status, error.code, error.message, error.headers()))
            return
        except TRANSIENT_ERRORS as error:
            log.warning("stream refused for now, the client will retry: %s", error)
            self._fail(retry_later_response())
            return
        except Exception:
            log.exception("unhandled error opening a stream")
            self._fail(error_response(500, "internal_error", "something went wrong on our side"))
            return
        finally:
            self._task = None
        self._start(missed)

    async def _authorize_and_open(self, request: RequestHead) -> list[Event]:
        parley = self._streams.parley

        def header(name: bytes) -> str:
            value = request.header(name)
            return "" if value is None else value.decode("latin-1")

        query = parse_qsl(request.query.decode("latin-1"), keep_blank_values=True)
        # The same model as the Hypercorn path's `/stream` (and its OpenAPI description).
        wanted = parse_query(SseQuery, lambda wanted_name: [value for name, value in query if name == wanted_name])
        self._form = HeartbeatForm(wanted.heartbeat)
        self._heartbeat_chunk = EVENT_HEARTBEAT_CHUNK if self._form.visible else HEARTBEAT_CHUNK
        cookies = parse_cookie(header(b"cookie"))
        token = token_from({"Authorization": header(b"authorization")}, cookies)
        if token is None:
            raise Unauthorized("sign in: send a bearer token or the parley_token cookie", code="unauthenticated")
        identity = await parley.auth.verify(token)
        parley.users.remember_soon(identity)
        session = await session_for(parley, identity, wanted.discussion)
        # Browsers send Last-Event-ID only on their own reconnects; a page that rebuilt its
        # EventSource passes its stored cursor in the query instead.
        resume = header(b"last-event-id") or wanted.last_event_id
        self._session = session
        self._counted = True
        self._streams.connections.inc()
        self.expires_at = identity.expires_at
        return await session.open(resume)

    def _fail(self, response: bytes) -> None:
        transport = self._transport
        self._release()
        if transport is not None:
            write(transport, response)
            transport.close()

    def _start(self, missed: Iterable[Event]) -> None:
        transport, session = self._transport, self._session
        if transport is None or session is None:
            self._release()
            return
        subscription = session.subscription
        preamble = self._form.preamble(self._streams.parley.settings.heartbeat_s, session)
        write(transport, RESPONSE_HEAD + chunk(preamble + b"".join(event.sse for event in missed)))
        if subscription.dropped:  # overflowed while catching up; the client resumes
            self.end()
            return
        subscription.on_drop = self._dropped
        pending = subscription.take()
        if pending:
            write(transport, chunk(b"".join(event.sse for event in pending)))
        subscription.sink = self._deliver
        self._streams.add(self)

    # -- streaming: called by the hub and the process-wide timer ------------------------------

    def _deliver(self, event: Event) -> bool:
        """The subscription's sink: the hot path of every fan-out."""
        transport = cast(asyncio.Transport, self._transport)
        try:
            transport.write(self._streams.chunk_of(event))
        except RuntimeError:
            return True  # closed under us (see `write`); connection_lost cleans up
        self._idle_ticks = 0
        return transport.get_write_buffer_size() <= self._streams.max_write_buffer

    def tick(self) -> None:
        """Every heartbeat interval / TICKS_PER_HEARTBEAT: a heartbeat if nothing was sent."""
        self._idle_ticks += 1
        if self._idle_ticks < TICKS_PER_HEARTBEAT or self._transport is None:
            return
        self._idle_ticks = 0
        session = self._session
        if session is not None and self._idle_ended(session):
            return
        write(self._transport, self._heartbeat_chunk)
        if session is not None and self._transport.get_write_buffer_size() > self._streams.max_write_buffer:
            self._streams.parley.hub.drop(session.subscription, reason="slow_consumer")

    def _idle_ended(self, session: StreamSession) -> bool:
        """FR-035: a session idle for the timeout gets `session_idle`, and its stream ends."""
        try:
            notice = session.idle_notice()
        except SlowConsumer:
            notice = []
        if notice is None:
            return False
        if self._transport is not None:
            for event in notice:
                write(self._transport, chunk(event.sse))
        self.end()
        return True

    def expire(self) -> None:
        """The token expired: say so (no id line, so Last-Event-ID stays) and end the stream."""
        if self._transport is not None and self._session is not None:
            write(self._transport, chunk(self._session.auth_expired().sse_without_id))
        self.end()

    def end(self) -> None:
        """End the response properly (last chunk) and close once it is sent."""
        transport = self._transport
        self._release()
        if transport is not None:
            write(transport, LAST_CHUNK)
            transport.close()

    def _dropped(self) -> None:
        """Dropped by the hub (slow consumer, log gap): close now, discarding what is unsent."""
        transport = self._transport
        self._release()
        if transport is not None:
            transport.abort()

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """A stream reads nothing after its head; input is discarded, never buffered."""

    def eof_received(self) -> bool | None:
        return None  # the client closed its side: close ours

    def pause_writing(self) -> None:
        """Backpressure is judged by `max_write_buffer` on each write, not by pausing."""

    def resume_writing(self) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()

    def _release(self) -> None:
        """Let go of everything this connection holds; safe to call more than once."""
        self._transport = None
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self._task = None
        self._streams.discard(self)
        session = self._session
        if session is not None:
            self._session = None
            session.close()
        if self._counted:
            self._counted = False
            self._streams.connections.dec()
