"""Socket.IO clients on raw asyncio sockets: Engine.IO v4 over WebSocket, spoken by hand.

The counterpart of bench/loadgen.py for bench/socketio/server.js (no socket.io client library and
no WebSocket library: the client must not be the bottleneck). Each client is an
`asyncio.Protocol` that

- sends the HTTP upgrade `GET /socket.io/?EIO=4&transport=websocket` and waits for `101`;
- parses the server's (unmasked) WebSocket frames; sends its own frames masked, as RFC 6455
  requires of a client;
- on the Engine.IO open packet (`0{...}`) connects namespace "/" with `40{"token", "discussion"}`
  (plus `"pid"` and `"offset"` when reconnecting, as socket.io-client does for connection state
  recovery); the server's `40{"sid","pid"}` opens the stream, and the session is *recovered* when
  the pid it returns is the one the client sent;
- answers each Engine.IO ping `2` with a pong `3`;
- for each event `42["response_posted",{...},"<offset>"]`: takes the publisher's send time out of
  the body (`bench t=<time.time_ns()>`) and records `now - t` in a shared histogram; keeps the
  offset (the last array element) for recovery; checks order: with the Redis Streams adapter the
  offset is a stream id `<ms>-<seq>` that must strictly increase; with the in-memory adapter
  (random offsets) the server's per-room `"seq"` is used instead. An equal position is a
  duplicate, a smaller one out of order.

With `retry_s` set, a client whose connection ends reconnects every `retry_s` (the herd workload).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from bench.common import LatencyHistogram, sign

MARKER = b"bench t="
SEQ = b'"seq":'


def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    """One masked client frame (FIN set)."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        head = bytes((0x80 | opcode, 0xFE)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0xFF)) + size.to_bytes(8, "big")
    if size:
        key = int.from_bytes((mask * (size // 4 + 1))[:size], "big")
        payload = (int.from_bytes(payload, "big") ^ key).to_bytes(size, "big")
    return head + mask + payload


@dataclass
class Totals:
    connected: int = 0
    received: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    other_events: int = 0
    pings: int = 0
    ended_by_server: int = 0
    failed: int = 0
    reconnects: int = 0
    recovered: int = 0  # reconnections where the server restored the session (socket.recovered)
    not_recovered: int = 0  # reconnections that got a fresh session (missed events are lost)
    connect_errors: int = 0  # `44` CONNECT_ERROR packets (auth refused)


class SioClient(asyncio.Protocol):
    def __init__(self, gen: SioLoadGen, index: int, discussion: str) -> None:
        self.gen = gen
        self.index = index
        self.discussion = discussion
        self.token = sign(f"bench-{index}")
        self.transport: asyncio.Transport | None = None
        self.pid: str | None = None  # the session's private id, for recovery
        self.offset: str | None = None  # the last event's offset, for recovery
        self.sent_pid: str | None = None
        self.last_pos: tuple[int, int] = (-1, -1)
        self.received = 0
        self.bytes = 0  # bytes received after the upgrade, WebSocket framing included
        self.bytes_sent = 0
        self.open = False
        self.ever_opened = False
        self.opened: asyncio.Future[None] | None = None
        self.ended: asyncio.Future[None] | None = None
        self.recovered_at: float | None = None  # monotonic time of the last successful resume
        self._head = b""
        self._buf = b""
        self._frag = b""
        self._upgraded = False

    # --- connection -----------------------------------------------------------------------

    def request(self) -> bytes:
        gen = self.gen
        key = base64.b64encode(os.urandom(16)).decode()
        return (
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
            f"Host: {gen.host}:{gen.port}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()

    def prepare(self) -> SioClient:
        self._head, self._buf, self._frag, self._upgraded = b"", b"", b"", False
        loop = asyncio.get_running_loop()
        self.opened, self.ended = loop.create_future(), loop.create_future()
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
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

    def _send(self, payload: bytes, opcode: int = 1) -> None:
        if self.transport is not None:
            frame = ws_frame(payload, opcode)
            self.bytes_sent += len(frame)
            self.transport.write(frame)

    # --- bytes in -------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        now_ns = time.time_ns()
        if not self._upgraded:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self._head[:end], self._head[end + 4 :]
            self._head = b""
            if not head.startswith(b"HTTP/1.1 101"):
                self.gen.last_error = head.split(b"\r\n", 1)[0].decode(errors="replace")
                assert self.transport is not None
                self.transport.close()
                return
            self._upgraded = True
        self.bytes += len(data)
        buf = self._buf + data if self._buf else data
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            b0 = buf[pos]
            length = buf[pos + 1] & 0x7F
            header = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                header = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                header = 10
            masked = buf[pos + 1] & 0x80
            if masked:
                header += 4
            end = pos + header + length
            if end > size:
                break
            payload = buf[pos + header : end]
            if masked:  # servers do not mask; tolerate it anyway
                key = buf[end - length - 4 : end - length]
                payload = bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))
            pos = end
            opcode = b0 & 0x0F
            if opcode in (0, 1, 2):
                if not b0 & 0x80:  # a fragment: keep until FIN
                    self._frag += payload
                    continue
                if self._frag:
                    payload, self._frag = self._frag + payload, b""
                self._packet(payload, now_ns)
            elif opcode == 9:  # WebSocket ping
                self._send(payload, 10)
            elif opcode == 8:  # close
                if self.transport is not None:
                    self.transport.close()
                self._buf = b""
                return
        self._buf = buf[pos:]

    def _packet(self, packet: bytes, now_ns: int) -> None:
        """One Engine.IO packet."""
        kind = packet[:1]
        if kind == b"4":  # message: a Socket.IO packet follows
            sio = packet[1:2]
            if sio == b"2":
                self._event(packet, now_ns)
            elif sio == b"0":
                self._connected(packet[2:])
            elif sio == b"4":
                self.gen.totals.connect_errors += 1
                self.gen.last_error = packet[2:].decode(errors="replace")
                if self.transport is not None:
                    self.transport.close()
            elif sio == b"1":  # server-side disconnect of the namespace
                if self.transport is not None:
                    self.transport.close()
            else:
                self.gen.totals.other_events += 1
        elif kind == b"2":  # ping: answer pong
            self.gen.totals.pings += 1
            self._send(b"3")
        elif kind == b"0":  # Engine.IO open: connect the namespace
            auth: dict[str, str] = {"token": self.token, "discussion": self.discussion}
            if self.pid is not None and self.offset is not None:
                auth |= {"pid": self.pid, "offset": self.offset}
                self.sent_pid = self.pid
            else:
                self.sent_pid = None
            self._send(b"40" + json.dumps(auth, separators=(",", ":")).encode())
        elif kind == b"1" and self.transport is not None:  # Engine.IO close
            self.transport.close()

    def _connected(self, body: bytes) -> None:
        info = json.loads(body) if body else {}
        pid = info.get("pid")
        totals = self.gen.totals
        if self.sent_pid is not None:
            if pid == self.sent_pid:
                totals.recovered += 1
                self.recovered_at = time.monotonic()
            else:
                totals.not_recovered += 1
        self.pid = pid
        if not self.open:
            self.open = True
            self.ever_opened = True
            self.gen.open_count += 1
            if self.opened is not None and not self.opened.done():
                self.opened.set_result(None)

    def _event(self, packet: bytes, now_ns: int) -> None:
        # 42["response_posted",{...,"body":"bench t=<ns> i=<n>",...,"seq":<n>},"<offset>"]
        gen = self.gen
        totals = gen.totals
        offset = b""
        if packet.endswith(b'"]'):
            start = packet.rfind(b',"', 0, len(packet) - 2)
            if start > 0:
                offset = packet[start + 2 : -2]
        if gen.order_by_offset:
            ms, _, seq = offset.partition(b"-")
            try:
                pos = (int(ms), int(seq))
            except ValueError:
                pos = (-1, -1)
        else:
            at = packet.rfind(SEQ)
            end = packet.find(b"}", at) if at > 0 else -1
            pos = (0, int(packet[at + len(SEQ) : end])) if end > 0 else (-1, -1)
        if pos != (-1, -1):
            if pos <= self.last_pos:
                if pos == self.last_pos:
                    totals.duplicates += 1
                else:
                    totals.out_of_order += 1
                return
            self.last_pos = pos
        if offset:
            self.offset = offset.decode()
        marker = packet.find(MARKER)
        if marker < 0:
            totals.other_events += 1
            return
        start = marker + len(MARKER)
        end = packet.find(b" ", start)  # "bench t=<ns> i=<n>"
        self.received += 1
        totals.received += 1
        if gen.recording:
            gen.hist.add((now_ns - int(packet[start:end])) // 1000)


class SioLoadGen:
    """N Socket.IO clients spread round-robin over discussions (and over ports, one per server
    process), sharing one histogram and counters. Same interface as bench.loadgen.LoadGen."""

    def __init__(
        self,
        host: str,
        port: int | Sequence[int],
        *,
        retry_s: float | None = None,
        order_by_offset: bool = True,
    ) -> None:
        self.host = host
        self.ports = [port] if isinstance(port, int) else list(port)
        self.port = self.ports[0]
        self.retry_s = retry_s
        self.order_by_offset = order_by_offset
        self.clients: list[SioClient] = []
        self.hist = LatencyHistogram()
        self.totals = Totals()
        self.open_count = 0
        self.recording = True
        self.last_error = ""
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def connect(
        self, count: int, discussions: Sequence[str], *, concurrency: int = 200, timeout_s: float = 300.0
    ) -> float:
        """Open `count` more connections; returns the seconds until every one had its namespace
        CONNECT acknowledged. At most `concurrency` handshakes in flight, as in bench/loadgen.py."""
        loop = asyncio.get_running_loop()
        semaphore = asyncio.Semaphore(concurrency)
        first = len(self.clients)
        new = [SioClient(self, first + i, discussions[(first + i) % len(discussions)]) for i in range(count)]
        self.clients += new
        started = time.monotonic()

        async def open_one(client: SioClient) -> None:
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

    def _watch(self, client: SioClient) -> None:
        task = asyncio.get_running_loop().create_task(self._reconnect_loop(client))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reconnect_loop(self, client: SioClient) -> None:
        """When the connection ends, retry every `retry_s` with the session's pid and last offset."""
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
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            missing = self.expected_shortfall(published, baseline)
            if missing == 0:
                return 0
            await asyncio.sleep(0.1)
        return self.expected_shortfall(published, baseline)

    def idle_bytes(self) -> int:
        return sum(client.bytes for client in self.clients)

    def idle_bytes_sent(self) -> int:
        return sum(client.bytes_sent for client in self.clients)

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
