"""The lean front: one asyncio server on $PORT that reads each new connection's request head
and either serves `GET /stream` itself (`lean_sse`) or hands the connection to Hypercorn.

Why: Hypercorn's per-connection state (tasks, h11, stream objects) and its send layers cost
~30 KB and ~70 µs per delivery on an SSE stream (issue 4); an `asyncio.Protocol` that writes
pre-encoded frames costs a fraction of both. Everything else (the REST API, WebSockets,
long-poll, HTTP/2 prior knowledge, malformed-but-parseable requests with bodies) stays Quart on
Hypercorn: such a connection is switched to a `StreamReaderProtocol`, fed the bytes already
read, and run by Hypercorn's own `TCPServer`, so pipelined requests after it are Hypercorn's.

The head is read with httptools, bounded in size (`MAX_HEAD_BYTES`, else 431) and time
(`PARLEY_HEADER_TIMEOUT_S` from the connection's start, else closed: slowloris); a head httptools
rejects gets 400. Only the first request of a connection is looked at.

Used by `app.serving` for every connection: with the lean stream path off
(`PARLEY_LEAN_STREAM=0`) or over TLS, a connection is handed to Hypercorn as soon as it is
accepted (TLS: after the handshake), so HTTP/2 keeps working.

Connection attempts per client IP address are limited here (`PARLEY_CONNECT_LIMIT_PER_MIN`,
GCRA in this process: no round trip on the accept path). A refused connection's head is read
as usual and answered 429 with `Retry-After`; one that opens with the HTTP/2 preface (which
cannot take an HTTP/1.1 answer) is closed. Behind a proxy or PaaS router every connection comes
from the router's few addresses: raise the limit there, or turn it off (0), and limit at the
proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import httptools
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config

from app.infra.ratelimit import Rate, retry_after_s
from app.infra.ratelimit_memory import MemoryRateLimiter
from app.web.error_response import ErrorAnswer, http11

log = logging.getLogger(__name__)

# Browsers send 1-4 KB; Hypercorn's h11 accepts up to 16 KiB (h11's max_incomplete_event_size).
MAX_HEAD_BYTES = 16 * 1024
# HTTP/2 with prior knowledge starts with this line: always Hypercorn's.
H2_PREFACE = b"PRI * HTTP/2.0\r\n"
HEAD_END = b"\r\n\r\n"
# Hypercorn's StreamReader gets the same limit asyncio.start_server would give it.
READER_LIMIT = 2**16


@dataclass(slots=True)
class RequestHead:
    """The first request of a connection, as the lean stream path needs it."""

    method: bytes
    path: bytes
    query: bytes
    http_version: str
    headers: list[tuple[bytes, bytes]]
    has_body: bool

    def header(self, name: bytes) -> bytes | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


class _HeadCollector:
    """httptools callbacks: keep the target and the header lines, nothing else."""

    __slots__ = ("headers", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))


class HandOver(Exception):
    """The head is valid HTTP but not ours to serve (an upgrade, CONNECT)."""


def parse_head(head: bytes) -> RequestHead:
    """Parse one complete request head. Raises `httptools.HttpParserError` if malformed,
    `HandOver` for an upgrade."""
    collector = _HeadCollector()
    parser = httptools.HttpRequestParser(collector)
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        raise HandOver() from None
    url = httptools.parse_url(collector.url)
    request = RequestHead(
        method=parser.get_method(),
        path=url.path or b"",
        query=url.query or b"",
        http_version=parser.get_http_version(),
        headers=collector.headers,
        has_body=False,
    )
    length = request.header(b"content-length")
    request.has_body = request.header(b"transfer-encoding") is not None or (
        length is not None and length.strip() != b"0"
    )
    return request


def is_lean_stream(request: RequestHead) -> bool:
    """`GET /stream` over HTTP/1.1 without a body: the requests the lean path serves.
    HTTP/1.0 has no chunked encoding; leave it (and anything unusual) to Hypercorn."""
    return (
        request.method == b"GET"
        and request.path == b"/stream"
        and request.http_version == "1.1"
        and not request.has_body
    )


StreamOpener = Callable[[asyncio.Transport, RequestHead], None]


class StoppingContext(WorkerContext):
    """Hypercorn's worker context, whose sleeps also end when the server stops.

    Hypercorn sleeps through the context only between a WebSocket's pings, and its ping loop
    outlives the WebSocket: a connection that closed keeps its task until the next ping (up to
    `websocket_ping_interval`, 25 s), so a stop waited the whole graceful timeout whenever a
    WebSocket had closed lately. Woken at the stop, the ping loop of a closed WebSocket ends;
    an open one sends one more ping and sleeps normally, as every sleep begun after the stop does.
    """

    async def sleep(self, wait: float) -> None:  # type: ignore[override]
        if self.terminated.is_set():
            await asyncio.sleep(wait)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self.terminated.wait()


class LeanServer:
    """Accepts connections on its listening sockets; owns every handed-over Hypercorn task.

    `open_stream` None: no lean stream path, every admitted connection is Hypercorn's at once."""

    def __init__(
        self,
        app: Any,
        config: Config,
        context: WorkerContext,
        lifespan_state: dict[str, Any],
        open_stream: StreamOpener | None,
        connect_rate: Rate | None,
        head_timeout_s: float,
    ) -> None:
        self._app = app
        self._config = config
        self._context = context
        self._state = lifespan_state
        self.open_stream = open_stream
        self._connect_rate = connect_rate
        self._attempts = MemoryRateLimiter()
        # A head must be complete this long after the connection opened (slowloris).
        self.head_timeout_s = head_timeout_s
        self._tasks: set[asyncio.Task[None]] = set()
        self._servers: list[asyncio.Server] = []

    async def listen(self, sock: Any, ssl_context: ssl.SSLContext | None = None) -> None:
        loop = asyncio.get_running_loop()
        if ssl_context is None:
            server = await loop.create_server(lambda: FrontProtocol(self), sock=sock, backlog=self._config.backlog)
        else:
            server = await loop.create_server(
                lambda: FrontProtocol(self, tls=True),
                sock=sock,
                backlog=self._config.backlog,
                ssl=ssl_context,
                ssl_handshake_timeout=self._config.ssl_handshake_timeout,
            )
        self._servers.append(server)

    def admit(self, transport: asyncio.BaseTransport) -> float:
        """0 when this connection attempt is within its IP address's limit, else the seconds
        until one would be."""
        if self._connect_rate is None:
            return 0.0
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) and peer else str(peer)
        return self._attempts.try_acquire(address, self._connect_rate)

    def hand_over(self, transport: asyncio.Transport, data: bytes) -> None:
        """Give the connection to Hypercorn as if it had just accepted it: `data` is every byte
        read so far, which Hypercorn parses from the start."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=READER_LIMIT, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if data:
            reader.feed_data(data)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        server = TCPServer(self._app, loop, self._config, self._context, self._state, reader, writer)
        task: asyncio.Task[None] = loop.create_task(server.run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stop_accepting(self) -> None:
        for server in self._servers:
            server.close()

    async def wait_closed(self, timeout_s: float) -> None:
        """Let Hypercorn's connections finish (they see `context.terminated`), then cancel."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


class FrontProtocol(asyncio.Protocol):
    """A new connection until its first request head is read; then it is replaced."""

    __slots__ = ("_buffer", "_deadline", "_refused_s", "_server", "_tls", "_transport")

    def __init__(self, server: LeanServer, *, tls: bool = False) -> None:
        self._server = server
        self._tls = tls
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._refused_s = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._refused_s = self._server.admit(transport)
        if not self._refused_s and (self._tls or self._server.open_stream is None):
            # Nothing for the lean path here: Hypercorn's from the first byte.
            self._transport = None
            self._server.hand_over(cast(asyncio.Transport, transport), b"")
            return
        self._deadline = asyncio.get_running_loop().call_later(self._server.head_timeout_s, self._timed_out)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        buffer = self._buffer
        scanned = max(0, len(buffer) - len(HEAD_END) + 1)
        buffer += data
        if buffer.startswith(H2_PREFACE[: len(buffer)]):
            if len(buffer) >= len(H2_PREFACE):
                self._finish()
                if self._refused_s:
                    transport.abort()  # an HTTP/2 client cannot read an HTTP/1.1 429
                else:
                    self._server.hand_over(transport, bytes(buffer))
            return
        end = buffer.find(HEAD_END, scanned)
        head_length = end + len(HEAD_END)
        if (end < 0 and len(buffer) > MAX_HEAD_BYTES) or head_length > MAX_HEAD_BYTES:
            self._reject(transport, 431, "headers_too_large", f"request head over {MAX_HEAD_BYTES} bytes")
            return
        if end < 0:
            return
        if self._refused_s:
            retry = {"Retry-After": str(retry_after_s(self._refused_s))}
            self._reject(transport, 429, "rate_limited", "too many connections from your address", retry)
            return
        self._finish()
        try:
            request = parse_head(bytes(buffer[:head_length]))
        except HandOver:
            self._server.hand_over(transport, bytes(buffer))
            return
        except httptools.HttpParserError:
            self._reject(transport, 400, "bad_request", "malformed request")
            return
        open_stream = self._server.open_stream
        if open_stream is not None and is_lean_stream(request):
            # Anything after the head (a pipelined request) can never be answered behind an
            # endless response; it is ignored, as the stream ignores all input.
            open_stream(transport, request)
        else:
            self._server.hand_over(transport, bytes(buffer))

    def eof_received(self) -> bool | None:
        # The client gave up before finishing its head: close.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    def _finish(self) -> None:
        """This protocol's work is done: stop the head timer and let go of everything."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._transport = None
        self._buffer = bytearray()

    def _reject(
        self,
        transport: asyncio.Transport,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._finish()
        transport.write(http11(ErrorAnswer(status, code, message, headers or {})))
        transport.close()

    def _timed_out(self) -> None:
        self._deadline = None
        transport = self._transport
        self._finish()
        if transport is not None:
            transport.abort()
