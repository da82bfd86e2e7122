"""The raw-asyncio ceiling for `lean_capacity.py fanout`: a minimal SSE server (uvloop, one
`asyncio.Protocol` per connection, one pre-encoded frame per event written to every client)
that emits `RATE` events/s by itself. No auth, no log, no HTTP parsing beyond "a request came".

    python bench/lean_reference.py PORT RATE
"""

from __future__ import annotations

import asyncio
import sys

import uvloop

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\nretry: 2000\n: connected\n\n"
# About the size of a real response_posted frame with a 200-character body.
DATA = b'{"id":"x","type":"response_posted","payload":{"body":"' + b"x" * 420 + b'"}}'

clients: set[asyncio.Transport] = set()


class Client(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if b"\r\n\r\n" in data and self.transport not in clients:
            self.transport.write(HEAD)  # type: ignore[attr-defined]
            clients.add(self.transport)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        clients.discard(self.transport)  # type: ignore[arg-type]


async def main(port: int, rate: float) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_server(Client, "127.0.0.1", port, backlog=1024)
    serial = 0
    while True:
        await asyncio.sleep(1 / rate)
        serial += 1
        frame = b"id: %d\nevent: response_posted\ndata: %b\n\n" % (serial, DATA)
        for transport in tuple(clients):
            transport.write(frame)


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), float(sys.argv[2])))
