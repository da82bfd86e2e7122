"""`GET /stream` on the lean front: the same stream as `sse.py`, with no task or timer per
connection once it is streaming.

A connection is authenticated and authorized (401/403/404/422/429 as JSON, like the Quart
path: `web/requests.authenticate`, `web/error_response`) and its session opened in one
short-lived task; from then on it is a `LeanStream` protocol object: the session's sink
(`StreamSession.stream_to`) writes each event's pre-encoded chunk to the transport. The
session owns the deadlines; one process-wide timer (`LeanStreams`) asks each stream's session
what is due (`StreamSession.tick` every `Node.tick_s`: a heartbeat, the idle end; `due` at
each token expiry: `auth_expired`, without an id line). A connection whose
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
from collections.abc import Coroutine, Iterable, Iterator
from typing import Any, cast
from urllib.parse import parse_qsl

from werkzeug.http import parse_cookie

from app.core.services import Services
from app.core.session import HEARTBEAT, End, Step, StreamSession
from app.log.events import Event
from app.transports.common import TRANSIENT_ERRORS, SseQuery, session_for
from app.transports.lean_http import RequestHead
from app.web.error_response import error_response, http11
from app.web.requests import authenticate, parse_query
from app.web.sse_wire import COMMENTS, EVENTS, SSE_HEADERS, HeartbeatForm, heartbeat_form, last_words, retry_later

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


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


# Each heartbeat form's frame, chunked once (a form is shared by every stream that chose it).
# Streams ticked per turn of the event loop (`LeanStreams._tick_streams`).
TICK_CHUNK = 200
HEARTBEAT_CHUNKS = {form: chunk(form.heartbeat) for form in (COMMENTS, EVENTS)}


def retry_later_response() -> bytes:
    """A whole response telling the client to reconnect later (see `sse_wire.retry_later`)."""
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
        max_buffered = parley.settings.max_buffered_events
        self.max_write_buffer = max(MIN_WRITE_BUFFER_BYTES, max_buffered * BYTES_PER_BUFFERED_EVENT)
        self.connections = parley.metrics.connections.labels(transport="sse")
        self._tick_s = parley.node.tick_s
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
            self._tick_streams(iter(tuple(self._streams)))
        if self._streams:
            self._schedule()

    def _tick_streams(self, streams: Iterator[LeanStream]) -> None:
        """A tick of every stream, `TICK_CHUNK` per turn of the loop: at 10,000 streams one
        pass in one callback stopped every delivery behind it for ~20 ms."""
        if self._closed:
            return
        for count, stream in enumerate(streams, 1):
            if stream in self._streams:  # not closed since the pass began
                stream.tick()
            if count == TICK_CHUNK:
                asyncio.get_running_loop().call_soon(self._tick_streams, streams)
                return

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

    __slots__ = ("_counted", "_form", "_session", "_streams", "_task", "_transport", "expires_at")

    def __init__(self, streams: LeanStreams, transport: asyncio.Transport, request: RequestHead) -> None:
        self._streams = streams
        self._transport: asyncio.Transport | None = transport
        self._session: StreamSession | None = None
        self._counted = False
        self._form: HeartbeatForm = COMMENTS
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
        except TRANSIENT_ERRORS as error:
            log.warning("stream refused for now, the client will retry: %s", error)
            self._fail(retry_later_response())
            return
        except Exception as error:  # ApiError: 401/403/404/422/429; anything else: 500, logged
            self._fail(http11(error_response(error)))
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
        self._form = heartbeat_form(wanted.heartbeat)
        headers = {"Authorization": header(b"authorization")}
        identity = await authenticate(headers, parse_cookie(header(b"cookie")), parley=parley, remember_now=False)
        session = await session_for(parley, identity, wanted.discussion)
        # Browsers send Last-Event-ID only on their own reconnects; a page that rebuilt its
        # EventSource passes its stored cursor in the query instead.
        resume = header(b"last-event-id") or wanted.last_event_id
        self._session = session
        self._counted = True
        self._streams.connections.inc()
        self.expires_at = session.expires_at
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
        preamble = self._form.preamble(self._streams.parley.node.heartbeat_s, session.seconds_until_expiry())
        write(transport, RESPONSE_HEAD + chunk(preamble + b"".join(event.sse for event in missed)))
        pending = session.stream_to(self._deliver, self._dropped)
        if pending is None:  # overflowed while catching up; the client resumes
            self.end()
            return
        if pending:
            write(transport, chunk(b"".join(event.sse for event in pending)))
        self._streams.add(self)

    # -- streaming: called by the hub and the process-wide timer ------------------------------

    def _deliver(self, event: Event) -> bool:
        """The session's sink: the hot path of every fan-out."""
        transport = cast(asyncio.Transport, self._transport)
        try:
            transport.write(self._streams.chunk_of(event))
        except RuntimeError:
            return True  # closed under us (see `write`); connection_lost cleans up
        return transport.get_write_buffer_size() <= self._streams.max_write_buffer

    def tick(self) -> None:
        """Every `Node.tick_s`: whatever the session says is due."""
        if self._session is not None:
            self._write(self._session.tick())

    def expire(self) -> None:
        """The token's expiry time came: the session ends it (`auth_expired`)."""
        if self._session is not None:
            self._write(self._session.due())

    def _write(self, step: Step | None) -> None:
        transport, session = self._transport, self._session
        if step is None or transport is None or session is None:
            return
        if isinstance(step, End):
            if step.notice is not None:
                write(transport, chunk(last_words(step)))
            self.end()
        elif step is HEARTBEAT:
            write(transport, HEARTBEAT_CHUNKS[self._form])
            if transport.get_write_buffer_size() > self._streams.max_write_buffer:
                session.fell_behind()

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
