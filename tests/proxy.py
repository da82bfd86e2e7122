"""A TCP proxy on loopback between a browser and a real server process, which a test controls.

It forwards bytes both ways, and can misbehave the way networks and middleboxes do:
- `blackhole_streams()`: the connections carrying a stream (`GET /stream`, `GET /ws`) stop
  forwarding in both directions, with no close and no reset: a dead Wi-Fi, a NAT that forgot the
  flow. Connections opened afterwards work (the page's reconnection comes through).
- `buffer_sse=True`: a proxy that buffers response bodies: a `GET /stream` answer is held back
  until the server ends it (so a live stream shows nothing at all).
- `refuse_ws=True`: WebSocket upgrades are answered 403 (a proxy that blocks them).

Requests are told apart by the first bytes of what the client writes (`GET /stream`, `GET /ws`),
which is how browsers write a request head: enough for a test, not a general HTTP parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

REFUSED = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass(eq=False)
class Proxied:
    """One client connection and its upstream twin."""

    opened_at: float
    kind: str = "http"  # "sse", "ws" or "http": what its latest request was
    blackholed: bool = False
    bytes_down: int = 0  # server -> client, forwarded
    bytes_up: int = 0  # client -> server, forwarded
    held: list[bytes] = field(default_factory=list)  # buffered SSE, not yet forwarded
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def stream(self) -> bool:
        return self.kind in {"sse", "ws"}


class ControlledProxy:
    def __init__(self, upstream_port: int, *, buffer_sse: bool = False, refuse_ws: bool = False) -> None:
        self.upstream_port = upstream_port
        self.buffer_sse = buffer_sse
        self.refuse_ws = refuse_ws
        self.connections: list[Proxied] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> ControlledProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in self.connections:
            for writer in connection.writers:
                with contextlib.suppress(Exception):
                    writer.close()
        for task in tuple(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def blackhole_streams(self) -> float:
        """Stop forwarding on every open stream connection, silently; returns the time (epoch s)."""
        for connection in self.connections:
            if connection.stream and not self._ended(connection):
                connection.blackholed = True
        return time.time()

    def streams(self, kind: str | None = None) -> list[Proxied]:
        """Stream connections opened so far (of one kind: "sse" or "ws")."""
        return [c for c in self.connections if c.stream and (kind is None or c.kind == kind)]

    @staticmethod
    def _ended(connection: Proxied) -> bool:
        return any(writer.is_closing() for writer in connection.writers)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        connection = Proxied(opened_at=time.time(), writers=[client_writer])
        self.connections.append(connection)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_writer.close()
            return
        connection.writers.append(upstream_writer)
        up = asyncio.ensure_future(self._pump_up(connection, client_reader, upstream_writer, client_writer))
        down = asyncio.ensure_future(self._pump_down(connection, upstream_reader, client_writer))
        for task in (up, down):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        # One side ended. A blackholed connection stays open (that is the point); others close.
        if not connection.blackholed:
            for writer in connection.writers:
                with contextlib.suppress(Exception):
                    writer.close()

    async def _pump_up(
        self,
        connection: Proxied,
        reader: asyncio.StreamReader,
        upstream: asyncio.StreamWriter,
        client: asyncio.StreamWriter,
    ) -> None:
        while data := await reader.read(65536):
            if connection.blackholed:
                continue
            if data.startswith(b"GET /stream"):
                connection.kind = "sse"
            elif data.startswith(b"GET /ws"):
                connection.kind = "ws"
                if self.refuse_ws:
                    client.write(REFUSED)
                    await client.drain()
                    return
            elif data[:8].split(b" ", 1)[0] in {b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"HEAD"}:
                connection.kind = "http"
            connection.bytes_up += len(data)
            upstream.write(data)
            await upstream.drain()

    async def _pump_down(self, connection: Proxied, reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if connection.blackholed:
                continue
            if self.buffer_sse and connection.kind == "sse":
                connection.held.append(data)  # released only when the server ends the response
                continue
            connection.bytes_down += len(data)
            client.write(data)
            await client.drain()
        if connection.held and not connection.blackholed:
            client.write(b"".join(connection.held))
            connection.held.clear()
            await client.drain()
