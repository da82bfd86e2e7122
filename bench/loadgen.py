"""A load generator of SSE clients on raw asyncio sockets (no HTTP library: the client must not
be the bottleneck).

Each client is an `asyncio.Protocol` that sends `GET /stream?discussion=…` with a bearer token,
decodes HTTP/1.1 chunked framing, splits SSE frames on the blank line and, for each event:

- takes the publisher's send time out of the response body (`bench t=<time.time_ns()>`) and
  records `now - t` in a shared histogram (`now` is read once per `data_received`, which is when
  the bytes reached us);
- checks order: the event's id (`<epoch>.<ms>-<seq>`) must be strictly greater than the last one
  this connection saw; an equal id is a duplicate, a smaller one an out-of-order delivery;
- counts it, so that after the publisher stops, `received` can be compared with what was
  published to the connection's discussion: the shortfall is what was lost.

With `retry_s` set, a client whose stream ends reconnects with `Last-Event-ID` (the herd
workload), as a browser's EventSource would.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from .common import LatencyHistogram, sign

MARKER = b"bench t="


@dataclass
class Totals:
    connected: int = 0
    received: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    other_events: int = 0  # sync_required, auth_expired, …
    heartbeats: int = 0
    bytes: int = 0
    ended_by_server: int = 0
    failed: int = 0
    reconnects: int = 0


class SseClient(asyncio.Protocol):
    def __init__(self, gen: LoadGen, index: int, discussion: str) -> None:
        self.gen = gen
        self.index = index
        self.discussion = discussion
        self.token = sign(f"bench-{index}")
        self.transport: asyncio.Transport | None = None
        self.last_id: bytes | None = None
        self.last_pos: tuple[int, int] = (-1, -1)
        self.received = 0
        self.bytes = 0
        self.heartbeats = 0
        self.open = False
        self.ever_opened = False  # a client that never connected is a connect failure, not a loss
        self.opened: asyncio.Future[None] | None = None
        self.ended: asyncio.Future[None] | None = None
        self._head = b""
        self._raw = b""
        self._sse = b""
        self._chunk_left = 0  # bytes of the current chunk's payload still to come (+2 for CRLF)
        self._headers_done = False
        self._chunked = False

    # --- connection -----------------------------------------------------------------------

    def request(self) -> bytes:
        gen = self.gen
        lines = [
            f"GET /stream?discussion={self.discussion} HTTP/1.1",
            f"Host: {gen.host}:{gen.port}",
            f"Authorization: Bearer {self.token}",
            "Accept: text/event-stream",
        ]
        if self.last_id is not None:
            lines.append("Last-Event-ID: " + self.last_id.decode())
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def prepare(self) -> SseClient:
        """Reset the per-connection state; called before each (re)connection attempt."""
        self._head, self._raw, self._sse = b"", b"", b""
        self._chunk_left, self._headers_done = 0, False
        loop = asyncio.get_running_loop()
        self.opened, self.ended = loop.create_future(), loop.create_future()
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same methods.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.open:
            self.gen.totals.ended_by_server += 1
            self.gen.open_count -= 1
        self.open = False
        self.transport = None
        for future in (self.opened, self.ended):
            if future is not None and not future.done():
                future.set_result(None)

    # --- bytes in -------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        now_ns = time.time_ns()
        self.bytes += len(data)
        if not self._headers_done:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self._head[:end].lower(), self._head[end + 4 :]
            self._head = b""
            if not head.startswith(b"http/1.1 200"):
                self.gen.last_error = head.split(b"\r\n", 1)[0].decode(errors="replace")
                assert self.transport is not None
                self.transport.close()
                return
            self._headers_done = True
            self._chunked = b"transfer-encoding: chunked" in head
            self.bytes -= end + 4  # count body bytes only
        self._feed(self._dechunk(data) if self._chunked else data, now_ns)

    def _dechunk(self, data: bytes) -> bytes:
        raw = self._raw + data if self._raw else data
        out = []
        pos = 0
        size = len(raw)
        while pos < size:
            if self._chunk_left > 0:
                take = min(self._chunk_left, size - pos)
                out.append(raw[pos : pos + take])
                pos += take
                self._chunk_left -= take
                if self._chunk_left == 0:
                    self._chunk_left = -2  # the CRLF after the payload
                continue
            if self._chunk_left < 0:
                skip = min(-self._chunk_left, size - pos)
                pos += skip
                self._chunk_left += skip
                continue
            eol = raw.find(b"\r\n", pos)
            if eol < 0:
                break
            length = int(raw[pos:eol].split(b";", 1)[0], 16)
            pos = eol + 2
            if length == 0:  # the body's end: the server finished the stream
                pos = size
                break
            self._chunk_left = length
        self._raw = raw[pos:]
        # A chunk's payload may be handed on in pieces: _feed keeps any partial frame itself.
        return b"".join(out)

    def _feed(self, data: bytes, now_ns: int) -> None:
        buffer = self._sse + data if self._sse else data
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        frames = buffer.split(b"\n\n")
        self._sse = frames.pop()
        gen = self.gen
        totals = gen.totals
        hist = gen.hist
        for frame in frames:
            if frame.startswith(b"id: "):
                self._event(frame, now_ns, gen, totals, hist)
            elif frame.startswith(b"retry:") or frame.startswith(b": connected"):
                if not self.open:
                    self.open = True
                    self.ever_opened = True
                    gen.open_count += 1
                    if self.opened is not None and not self.opened.done():
                        self.opened.set_result(None)
            elif frame.startswith(b":"):
                self.heartbeats += 1
            elif frame:
                totals.other_events += 1  # an event without id (auth_expired)

    def _event(self, frame: bytes, now_ns: int, gen: LoadGen, totals: Totals, hist: LatencyHistogram) -> None:
        newline = frame.find(b"\n")
        event_id = frame[4:newline]
        _, _, position = event_id.rpartition(b".")
        ms, _, seq = position.partition(b"-")
        pos = (int(ms), int(seq))
        if pos <= self.last_pos:
            if pos == self.last_pos:
                totals.duplicates += 1
            else:
                totals.out_of_order += 1
            return
        self.last_pos = pos
        self.last_id = event_id
        marker = frame.find(MARKER, newline)
        if marker < 0:
            totals.other_events += 1  # sync_required and other notices carry no send time
            kind = frame.find(b"event: ")
            name = frame[kind + 7 : frame.find(b"\n", kind)].decode() if kind >= 0 else "message"
            gen.other_types[name] = gen.other_types.get(name, 0) + 1
            return
        start = marker + len(MARKER)
        end = start
        while 48 <= frame[end] <= 57:
            end += 1
        self.received += 1
        totals.received += 1
        if gen.recording:
            hist.add((now_ns - int(frame[start:end])) // 1000)


class LoadGen:
    """N SSE clients spread round-robin over discussions, sharing one histogram and counters."""

    def __init__(self, host: str, port: int | Sequence[int], *, retry_s: float | None = None) -> None:
        self.host = host
        self.ports = [port] if isinstance(port, int) else list(port)
        self.port = self.ports[0]
        self.retry_s = retry_s
        self.clients: list[SseClient] = []
        self.hist = LatencyHistogram()
        self.totals = Totals()
        self.other_types: dict[str, int] = {}  # event type -> count, of events without a send time
        self.open_count = 0
        self.recording = True
        self.last_error = ""
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def connect(
        self, count: int, discussions: Sequence[str], *, concurrency: int = 200, timeout_s: float = 300.0
    ) -> float:
        """Open `count` more streams; returns the seconds until every one got its preamble.

        At most `concurrency` handshakes are in flight: opening thousands at once would overflow
        the listen backlog and measure SYN retransmission timers instead of the server."""
        loop = asyncio.get_running_loop()
        semaphore = asyncio.Semaphore(concurrency)
        first = len(self.clients)
        new = [SseClient(self, first + i, discussions[(first + i) % len(discussions)]) for i in range(count)]
        self.clients += new
        started = time.monotonic()

        async def open_one(client: SseClient) -> None:
            async with semaphore:
                port = self.ports[client.index % len(self.ports)]
                try:
                    await loop.create_connection(client.prepare, self.host, port)
                    assert client.opened is not None
                    await asyncio.wait_for(asyncio.shield(client.opened), 60)
                except (OSError, TimeoutError) as error:
                    self.last_error = repr(error)
                if not client.open:
                    self.totals.failed += 1

        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(open_one(client) for client in new))
        elapsed = time.monotonic() - started
        self.totals.connected = self.open_count
        if self.retry_s is not None:
            for client in new:
                self._watch(client)
        return elapsed

    def _watch(self, client: SseClient) -> None:
        task = asyncio.get_running_loop().create_task(self._reconnect_loop(client))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reconnect_loop(self, client: SseClient) -> None:
        """Like EventSource: when the stream ends, retry every `retry_s` with Last-Event-ID."""
        assert self.retry_s is not None
        loop = asyncio.get_running_loop()
        while not self._stopping:
            if client.ended is not None:
                await asyncio.shield(client.ended)
            if self._stopping:
                return
            for _attempt in range(int(600 / self.retry_s)):  # bounded: 10 minutes of retries
                if self._stopping:
                    return
                port = self.ports[client.index % len(self.ports)]
                try:
                    await loop.create_connection(client.prepare, self.host, port)
                    self.totals.reconnects += 1
                    break
                except OSError:
                    await asyncio.sleep(self.retry_s)
            else:
                return

    def expected_shortfall(self, published: dict[str, int], baseline: dict[int, int] | None = None) -> int:
        """Events published to each client's discussion that it has not received."""
        missing = 0
        for client in self.clients:
            if not client.ever_opened:
                continue
            already = baseline.get(client.index, 0) if baseline else 0
            missing += max(0, published.get(client.discussion, 0) - (client.received - already))
        return missing

    def received_by_client(self) -> dict[int, int]:
        return {client.index: client.received for client in self.clients}

    async def drain(
        self, published: dict[str, int], baseline: dict[int, int] | None = None, timeout_s: float = 15.0
    ) -> int:
        """Wait until every client has all it should (or the timeout); returns what is missing."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            missing = self.expected_shortfall(published, baseline)
            if missing == 0:
                return 0
            await asyncio.sleep(0.1)
        return self.expected_shortfall(published, baseline)

    def idle_bytes(self) -> int:
        return sum(client.bytes for client in self.clients)

    async def close(self) -> None:
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self.clients:
            if client.transport is not None:
                with contextlib.suppress(Exception):
                    client.transport.abort()
        await asyncio.sleep(0.1)
