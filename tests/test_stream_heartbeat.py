"""Heartbeats a client can rely on for loss detection (FR-022, FR-026, issue 14), against real
server processes: `GET /stream?heartbeat=event` on both stream paths, and the WebSocket's
heartbeat for a client that talks more often than the heartbeat interval."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest

from .support import Server, SseReader, sign
from .test_stream import make_discussion, open_stream, post
from .test_ws_poll import open_ws

pytestmark = pytest.mark.slow

HEARTBEAT_S = 0.5


@pytest.fixture
def server(start_server: Callable[..., Server], stream_path: dict[str, str]) -> Server:
    return start_server(PARLEY_HEARTBEAT_S=str(HEARTBEAT_S), **stream_path)


async def raw_until(reader: SseReader, count: int, timeout_s: float = 10.0) -> list[tuple[str | None, str, str]]:
    """The next `count` events as (id, type, data), heartbeats included."""
    got = []
    async with asyncio.timeout(timeout_s):
        while len(got) < count:
            event = await reader.next_event()
            got.append((event.id, event.event, event.data))
    return got


async def test_event_heartbeats_start_with_hello_and_carry_no_id(server: Server) -> None:
    token = sign("alice", ttl_s=600)
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, server, token)
    async with open_stream(server, token, [discussion], heartbeat="event") as reader:
        first = await reader.next_event()
        assert (first.id, first.event) == (None, "hello")
        hello = first.json
        assert hello["type"] == "hello" and hello["heartbeat_s"] == HEARTBEAT_S
        assert 590 <= hello["expires_in_s"] <= 600
        seen = await raw_until(reader, 6)
        heartbeats = [event for event in seen if event[1] == "heartbeat"]
        assert len(heartbeats) >= 3
        assert all(event_id is None and json.loads(data) == {"type": "heartbeat"} for event_id, _, data in heartbeats)
        # Events keep their ids and come between heartbeats.
        async with httpx.AsyncClient() as client:
            posted = await post(client, server, token, discussion, "between heartbeats")
        async with asyncio.timeout(10):
            while (event := await reader.next_event()).event != "response_posted":
                pass
        assert event.id and event.json["payload"]["response"]["id"] == posted["id"]


async def test_the_default_heartbeat_stays_a_comment(server: Server) -> None:
    token = sign("alice")
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, server, token)
    async with open_stream(server, token, [discussion]) as reader:
        await asyncio.sleep(HEARTBEAT_S * 3)  # heartbeats, then an event to read up to
        async with httpx.AsyncClient() as client:
            await post(client, server, token, discussion, "after a pause")
        async with asyncio.timeout(10):
            while (event := await reader.next_event()).event != "response_posted":
                assert event.event not in {"hello", "heartbeat"}
        # Heartbeats are empty comment lines (":"), after the preamble's ": connected".
        assert reader.comments[0] == "connected" and reader.comments[1:].count("") >= 2


async def test_a_bad_heartbeat_form_is_422(server: Server) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.get(server.url + "/stream?heartbeat=loud", headers={"Authorization": f"Bearer {sign('a')}"})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_field"


async def test_a_chatty_websocket_client_still_gets_heartbeats(start_server: Callable[..., Server]) -> None:
    """The heartbeat is due `heartbeat_s` after the server's last send, not after the client's
    last message: a client that talks more often than that (here: presence, which gets no
    reply) still hears from the server in time, or its deadline would call the socket dead."""
    server = start_server(
        PARLEY_HEARTBEAT_S=str(HEARTBEAT_S),
        PARLEY_PRESENCE_LIMIT_PER_MIN="0",
        PARLEY_WS_USER_MESSAGES_PER_MIN="0",
        PARLEY_WS_CONNECTION_MESSAGES_PER_MIN="0",
    )
    token = sign("alice")
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, server, token)
    async with open_ws(server, token, [discussion]) as ws:

        async def chatter() -> None:
            while True:
                await ws.send(json.dumps({"type": "presence", "status": "online"}))
                await asyncio.sleep(HEARTBEAT_S / 4)

        talking = asyncio.ensure_future(chatter())
        heartbeats = 0
        try:
            async with asyncio.timeout(10):
                while heartbeats < 8:
                    heartbeats += json.loads(await ws.recv())["type"] == "heartbeat"
        finally:
            talking.cancel()
