"""FR-009: a user whose every connection is away (every tab hidden) gets Web Push; one online
connection anywhere keeps notifications in-app only. Real server processes (embedded log, or
Redis with the active-user sets across processes), a real WebSocket and SSE stream, and the
tests' loopback push service (tests/push_service.py).

Absence of a push is read from the notification's stored `push_state` ("none": no push was
planned), decided when the notification is stored, so nothing is asserted by waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import redis.asyncio as redis
from websockets.asyncio.client import ClientConnection

from .push_service import PushService
from .support import Server, bearer, sign
from .test_notifications import notifications, respond, wait_until
from .test_stream import make_discussion, open_stream
from .test_ws_poll import open_ws

pytestmark = pytest.mark.slow


@pytest.fixture
def push_service() -> AsyncIterator[PushService]:
    with PushService() as service:
        yield service


@pytest.fixture(params=["embedded", "redis"])
def log(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(log: str, request: pytest.FixtureRequest, start_server: Callable[..., Server]) -> Server:
    if log == "redis":
        return start_server(
            REDIS_URL=request.getfixturevalue("redis_url"),
            PARLEY_REDIS_PREFIX=request.getfixturevalue("redis_prefix"),
            PARLEY_PUSH_ALLOW_INSECURE="1",
        )
    return start_server(PARLEY_PUSH_ALLOW_INSECURE="1")


def push_state(server: Server, notification_id: str) -> str:
    with contextlib.closing(sqlite3.connect(server.workdir / "parley.db")) as db:
        row = db.execute("SELECT push_state FROM notifications WHERE id = ?", (notification_id,)).fetchone()
        return str(row[0])


async def settled(request: pytest.FixtureRequest, log: str, user_id: str, active: bool) -> None:
    """With Redis, the process's active-user set follows its connections at the next refresh
    (`REFRESH_S`); wait for it to say `active` before the next step (embedded: nothing to wait)."""
    if log != "redis":
        return
    prefix = request.getfixturevalue("redis_prefix")
    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    try:

        async def listed() -> bool:
            keys = [key async for key in client.scan_iter(match=f"{prefix}:active:*")]
            return any([await client.sismember(key, user_id) for key in keys])  # type: ignore[misc]

        async with asyncio.timeout(15):
            while await listed() != active:
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()


async def applied(ws: ClientConnection) -> None:
    """The server handles a WebSocket's messages in order: once a ping is answered, the
    messages sent before it have been applied."""
    await ws.send(json.dumps({"type": "ping"}))
    async with asyncio.timeout(10):
        while json.loads(await ws.recv())["type"] != "pong":
            pass


async def test_away_on_every_connection_means_push(
    server: Server, push_service: PushService, log: str, request: pytest.FixtureRequest
) -> None:
    bob, carol = sign("bob", "bob"), sign("carol")
    laptop = push_service.browser("bob-laptop")
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(server.url + "/api/push/subscriptions", json=laptop.subscription, headers=bearer(bob))
        assert r.status_code == 201, r.text
        discussion = await make_discussion(client, server, carol)

        async def mention(text: str) -> str:
            """Carol mentions Bob; the id of Bob's notification, once it is stored."""
            before = len(await notifications(client, server, bob))
            await respond(client, server, carol, discussion, f"@bob {text}")
            async with asyncio.timeout(15):
                while len(listed := await notifications(client, server, bob)) == before:
                    await asyncio.sleep(0.05)
            return str(listed[0]["id"])

        # Two tabs: one on a WebSocket (sends its status itself), one on SSE (the page sends
        # PUT /api/presence for it, which sets every connection of the user's).
        async with open_ws(server, bob, []) as ws, open_stream(server, bob, []):
            await settled(request, log, "bob", True)
            assert push_state(server, await mention("both tabs visible")) == "none"

            await ws.send(json.dumps({"type": "presence", "status": "away"}))
            await applied(ws)
            assert push_state(server, await mention("one tab hidden")) == "none"  # the SSE tab is online

            r = await client.put(server.url + "/api/presence", json={"status": "away"}, headers=bearer(bob))
            assert r.status_code in (200, 204), r.text
            await settled(request, log, "bob", False)
            away = await mention("every tab hidden")
            assert push_state(server, away) != "none"
            await wait_until(lambda: push_service.received_by("bob-laptop") or push_service.errors)
            assert push_service.errors == []
            [push] = push_service.received_by("bob-laptop")
            assert push.payload["notification"]["id"] == away

            # Back in view on one tab: in-app only again.
            await ws.send(json.dumps({"type": "presence", "status": "online"}))
            await applied(ws)
            await settled(request, log, "bob", True)
            assert push_state(server, await mention("back")) == "none"
        assert len(push_service.received_by("bob-laptop")) == 1
