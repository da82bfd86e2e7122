"""NFR-015 and issue 11: every source of events is limited, on real server processes.

Limited requests get 429, `Retry-After` and the API.md error shape; nothing is stored from
them. The limits here are set low through their settings so the tests are fast; their defaults
are in README's configuration table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from .support import Server, SseReader, bearer, sign
from .test_stream import make_discussion
from .test_ws_poll import open_ws, ws_url

pytestmark = pytest.mark.slow


def assert_limited(response: httpx.Response, code: str = "rate_limited") -> int:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    retry_after = int(response.headers["Retry-After"])
    assert retry_after >= 1
    return retry_after


@pytest.mark.parametrize("backend", ["embedded", "redis"])
async def test_posting_past_the_limit_is_refused(
    backend: str, start_server: Callable[..., Server], request: pytest.FixtureRequest
) -> None:
    env = {"PARLEY_RATE_LIMIT_PER_MIN": "5"}
    if backend == "redis":
        env |= {
            "REDIS_URL": request.getfixturevalue("redis_url"),
            "PARLEY_REDIS_PREFIX": request.getfixturevalue("redis_prefix"),
        }
    server = start_server(**env)
    alice, bob = sign("alice"), sign("bob")
    async with httpx.AsyncClient(base_url=server.url) as client:
        discussion = await make_discussion(client, server, alice)
        path = f"/api/discussions/{discussion}/responses"
        statuses = [
            (await client.post(path, json={"body": f"{i}"}, headers=bearer(alice))).status_code for i in range(5)
        ]
        assert statuses == [201] * 5
        refused = await client.post(path, json={"body": "one too many"}, headers=bearer(alice))
        # One post frees every 60 s / 5 = 12 s: no waiting for the next calendar minute.
        assert 1 <= assert_limited(refused) <= 12
        # Limits are per user.
        assert (await client.post(path, json={"body": "bob's"}, headers=bearer(bob))).status_code == 201
        bodies = [r["body"] for r in (await client.get(path, headers=bearer(alice))).json()["responses"]]
    assert "one too many" not in bodies
    assert len(bodies) == 6


async def test_every_rest_event_source_is_limited_across_servers(
    start_server: Callable[..., Server], redis_url: str, redis_prefix: str
) -> None:
    """Discussions, follows, typing and presence each have a limit, shared by two servers."""
    env = {
        "REDIS_URL": redis_url,
        "PARLEY_REDIS_PREFIX": redis_prefix,
        "PARLEY_DISCUSSION_LIMIT_PER_MIN": "2",
        "PARLEY_FOLLOW_LIMIT_PER_MIN": "2",
        "PARLEY_TYPING_LIMIT_PER_MIN": "2",
        "PARLEY_PRESENCE_LIMIT_PER_MIN": "2",
    }
    a, b = start_server(**env), start_server(**env)
    alice = bearer(sign("alice"))
    async with httpx.AsyncClient() as client:
        created = [await client.post(s.url + "/api/discussions", json={"title": "t"}, headers=alice) for s in (a, b)]
        assert [r.status_code for r in created] == [201, 201]
        assert_limited(await client.post(a.url + "/api/discussions", json={"title": "refused"}, headers=alice))
        discussion = created[0].json()["id"]

        follow = f"/api/discussions/{discussion}/follow"
        assert (await client.put(a.url + follow, headers=alice)).status_code == 200
        assert (await client.delete(b.url + follow, headers=alice)).status_code == 200
        assert_limited(await client.put(a.url + follow, headers=alice))
        follows = (await client.get(a.url + "/api/me/follows", headers=alice)).json()
        assert follows == []  # the refused follow stored nothing

        typing = f"/api/discussions/{discussion}/typing"
        for server in (a, b):
            assert (await client.put(server.url + typing, json={"typing": True}, headers=alice)).status_code == 200
        assert_limited(await client.put(a.url + typing, json={"typing": True}, headers=alice))

        for server, status in ((a, "away"), (b, "online")):
            assert (await client.put(server.url + "/api/presence", json={"status": status}, headers=alice)).is_success
        assert_limited(await client.put(b.url + "/api/presence", json={"status": "away"}, headers=alice))

        # Another user is not affected by alice's limits.
        bob = bearer(sign("bob"))
        assert (await client.post(b.url + "/api/discussions", json={"title": "bob"}, headers=bob)).status_code == 201


async def test_websocket_messages_are_limited_per_connection_and_per_user(
    start_server: Callable[..., Server],
) -> None:
    server = start_server(
        PARLEY_WS_CONNECTION_MESSAGES_PER_MIN="5", PARLEY_WS_USER_MESSAGES_PER_MIN="8", PARLEY_TYPING_LIMIT_PER_MIN="2"
    )
    alice = sign("alice")
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, server, alice)

    async def replies(ws: Any, count: int) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while len(got) < count:
                message = json.loads(await ws.recv())
                if message["type"] in {"pong", "error"}:
                    got.append(message)
        return got

    # Per user: typing past its limit is refused with an error; the connection stays.
    async with open_ws(server, alice, [discussion]) as ws:
        for typing in (True, False, True):
            await ws.send(json.dumps({"type": "typing", "discussion_id": discussion, "typing": typing}))
        await ws.send(json.dumps({"type": "ping"}))
        [refused, pong] = await replies(ws, 2)
        assert refused["code"] == "rate_limited" and refused["retry_after_s"] >= 1
        assert pong["type"] == "pong"

    # Per user, all connections: 8 messages a minute (4 used above); the 9th is refused.
    async with open_ws(server, alice, [discussion]) as first, open_ws(server, alice, [discussion]) as second:
        for ws in (first, second):
            await ws.send(json.dumps({"type": "ping"}))
            await ws.send(json.dumps({"type": "ping"}))
        assert [m["type"] for m in await replies(first, 2)] == ["pong", "pong"]
        assert [m["type"] for m in await replies(second, 2)] == ["pong", "pong"]
        await second.send(json.dumps({"type": "ping"}))
        [refused] = await replies(second, 1)
        assert refused["code"] == "rate_limited"

    # Per connection: the 6th message in a burst closes the connection with 4029.
    bob = sign("bob")
    async with open_ws(server, bob, [discussion]) as ws:
        for _ in range(6):
            await ws.send(json.dumps({"type": "ping"}))
        with pytest.raises(ConnectionClosed) as closed:
            await replies(ws, 7)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4029


async def test_open_streams_are_capped_per_user(
    start_server: Callable[..., Server], stream_path: dict[str, str]
) -> None:
    server = start_server(PARLEY_MAX_STREAMS_PER_USER="2", **stream_path)
    alice, bob = sign("alice"), sign("bob")
    params = {"discussion": ""}
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        discussion = await make_discussion(client, server, alice)
        params = {"discussion": discussion}
        async with contextlib.AsyncExitStack() as streams:
            for _ in range(2):
                r = await streams.enter_async_context(
                    client.stream("GET", "/stream", params=params, headers=bearer(alice))
                )
                assert r.status_code == 200  # the slot is taken before the status is sent
            refused = await client.get("/stream", params=params, headers=bearer(alice))
            assert_limited(refused, "too_many_streams")
            assert_limited(await client.get("/poll", params=params, headers=bearer(alice)), "too_many_streams")
            async with connect(ws_url(server, [discussion]), additional_headers=bearer(alice)) as ws:
                assert json.loads(await ws.recv())["code"] == "too_many_streams"
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 5)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4029
            # Another user has slots of their own.
            assert (
                await client.get("/poll", params={**params, "timeout": "0"}, headers=bearer(bob))
            ).status_code == 200
        # Closed streams give their slots back.
        deadline = time.monotonic() + 10
        while (
            r := await client.get("/poll", params={**params, "timeout": "0"}, headers=bearer(alice))
        ).status_code != 200:
            assert r.status_code == 429 and time.monotonic() < deadline
            await asyncio.sleep(0.05)


def _attempt(port: int, source: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


@pytest.mark.parametrize("lean", ["1", "0"])
def test_connection_attempts_per_ip_are_limited(start_server: Callable[..., Server], lean: str) -> None:
    server = start_server(PARLEY_CONNECT_LIMIT_PER_MIN="20", PARLEY_LEAN_STREAM=lean)
    # The start-up readiness checks spent some of 127.0.0.1's 20; go on until refused.
    outcomes = [_attempt(server.port, "127.0.0.1") for _ in range(21)]
    statuses = [status for status, _ in outcomes]
    assert 429 in statuses and statuses.index(429) >= 1
    assert set(statuses[statuses.index(429) :]) == {429}
    head, _, body = outcomes[-1][1].partition(b"\r\n\r\n")
    assert b"retry-after: 3" in head.lower()  # one attempt frees every 60 s / 20
    assert json.loads(body)["error"]["code"] == "rate_limited"
    # Per address: another one is let in.
    assert _attempt(server.port, "127.0.0.2")[0] == 200


async def test_one_user_cannot_flood_a_reader(start_server: Callable[..., Server]) -> None:
    """Issue 11: one user drove 2,750 events to one reader in 10 s across 50 discussions. Now
    what reaches a reader from one user is bounded by the limits, whatever the user tries."""
    limits = {"post": 20, "typing": 20, "presence": 5}
    server = start_server(
        PARLEY_RATE_LIMIT_PER_MIN=str(limits["post"]),
        PARLEY_TYPING_LIMIT_PER_MIN=str(limits["typing"]),
        PARLEY_PRESENCE_LIMIT_PER_MIN=str(limits["presence"]),
        PARLEY_DISCUSSION_LIMIT_PER_MIN="10",
    )
    mallory, reader = sign("mallory"), sign("reader")
    attempts = {"post": 0, "typing": 0, "presence": 0}
    received = 0
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        discussions = [await make_discussion(client, server, mallory) for _ in range(10)]
        query = [("discussion", d) for d in discussions]
        async with (
            client.stream("GET", "/stream", params=query, headers=bearer(reader)) as watching,
            client.stream("GET", "/stream", params=query, headers=bearer(mallory)) as present,
        ):
            assert watching.status_code == 200 and present.status_code == 200
            events = SseReader(watching.aiter_raw())

            async def count() -> None:
                nonlocal received
                while True:
                    event = await events.next_event()
                    if (event.json.get("user") or {}).get("id") == "mallory":
                        received += 1

            async def flood(seconds: float) -> None:
                deadline = time.monotonic() + seconds
                i = 0
                while time.monotonic() < deadline:
                    d = discussions[i % len(discussions)]
                    i += 1
                    await asyncio.gather(
                        client.post(f"/api/discussions/{d}/responses", json={"body": f"{i}"}, headers=bearer(mallory)),
                        client.put(
                            f"/api/discussions/{d}/typing", json={"typing": i % 2 == 0}, headers=bearer(mallory)
                        ),
                        client.put(
                            "/api/presence", json={"status": "away" if i % 2 else "online"}, headers=bearer(mallory)
                        ),
                    )
                    for action in attempts:
                        attempts[action] += 1

            counter = asyncio.create_task(count())
            flood_s = 4.0
            started = time.monotonic()
            await flood(flood_s)
            await asyncio.sleep(1.5)  # let what was accepted arrive
            elapsed_min = (time.monotonic() - started) / 60
            counter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await counter
    # Accepted actions: a burst of each limit, then its rate. A post is one event; a typing
    # signal at most one; a presence change one per discussion mallory is present in; and
    # mallory's own stream joined each discussion once.
    accepted = {action: limits[action] * (1 + elapsed_min) + 1 for action in limits}
    bound = accepted["post"] + accepted["typing"] + accepted["presence"] * len(discussions) + len(discussions)
    tried = attempts["post"] + attempts["typing"] + attempts["presence"] * len(discussions)
    print(f"mallory tried {tried} events' worth, the reader got {received} (bound {bound:.0f})")
    assert attempts["post"] > 3 * limits["post"]  # the flood did try far more than allowed
    assert 0 < received <= bound
