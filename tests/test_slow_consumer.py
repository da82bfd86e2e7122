"""A reader that stops reading is dropped, bounded in memory, while everyone else is served."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import httpx
import pytest

from .support import Server, bearer, sign
from .test_stream import events, make_discussion, metric, open_stream, post

pytestmark = pytest.mark.slow


def stalled_stream(server: Server, token: str, discussion: str) -> socket.socket:
    """A raw client that sends its request and then never reads (a tiny receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    request = (
        f"GET /stream?discussion={discussion} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    )
    sock.sendall(request.encode())
    return sock


async def test_a_stalled_reader_is_dropped_and_others_get_everything(
    start_server: Callable[..., Server], stream_path: dict[str, str]
) -> None:
    server = start_server(PARLEY_MAX_BUFFERED_EVENTS="16", PARLEY_RATE_LIMIT_PER_MIN="100000", **stream_path)
    alice = sign("alice")
    async with httpx.AsyncClient(timeout=10) as client:
        discussion = await make_discussion(client, server, alice)
        stalled = stalled_stream(server, alice, discussion)
        try:
            async with open_stream(server, alice, [discussion]) as healthy:
                for _ in range(100):
                    if await metric(server, "parley_subscriptions") == 2:
                        break
                    await asyncio.sleep(0.05)
                big = "x" * 9_900  # 700 of these outgrow the kernel's 4 MiB send buffer
                reading = asyncio.create_task(events(healthy, 700, timeout_s=60))
                posted = [await post(client, server, alice, discussion, f"{i} {big}") for i in range(700)]
                received = await reading
                assert [e.json["payload"]["response"]["id"] for e in received] == [p["id"] for p in posted]
                dropped = await metric(server, 'parley_dropped_consumers_total{reason="slow_consumer"}')
                assert dropped == 1
                assert await metric(server, "parley_subscriptions") == 1
                # The stalled connection itself is closed too, not left holding a socket.
                for _ in range(100):
                    if await metric(server, 'parley_connections{transport="sse"}') == 1:
                        break
                    await asyncio.sleep(0.05)
                assert await metric(server, 'parley_connections{transport="sse"}') == 1
        finally:
            stalled.close()
        r = await client.get(f"{server.url}/api/discussions/{discussion}", headers=bearer(alice))
        assert r.status_code == 200
