"""`GET /ws` and `GET /poll` against real server processes (API.md, Streams; bad input)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .support import START_TIMEOUT_S, Server, bearer, sign
from .test_stream import PRESENCE_EVENTS, make_discussion, metric, post

pytestmark = pytest.mark.slow


@pytest.fixture(params=["embedded", "redis"])
def server(request: pytest.FixtureRequest, start_server: Callable[..., Server]) -> Server:
    if request.param == "redis":
        return start_server(
            REDIS_URL=request.getfixturevalue("redis_url"), PARLEY_REDIS_PREFIX=request.getfixturevalue("redis_prefix")
        )
    return start_server()


@pytest.fixture
def embedded(start_server: Callable[..., Server]) -> Server:
    return start_server()


def ws_url(server: Server, discussions: list[str], **params: str) -> str:
    query = httpx.QueryParams([("discussion", d) for d in discussions] + list(params.items()))
    return f"ws://127.0.0.1:{server.port}/ws?{query}"


@contextlib.asynccontextmanager
async def open_ws(
    server: Server,
    token: str,
    discussions: list[str],
    *,
    origin: str | None = None,
    connect_options: dict[str, Any] | None = None,
    **params: str,
) -> AsyncIterator[ClientConnection]:
    async with connect(
        ws_url(server, discussions, **params),
        additional_headers=bearer(token),
        origin=origin,  # type: ignore[arg-type]
        compression=None,
        open_timeout=START_TIMEOUT_S,
        **(connect_options or {}),
    ) as connection:
        hello = await receive(connection)
        assert hello["type"] == "hello"
        yield connection


async def receive(connection: ClientConnection, timeout_s: float = 10.0) -> dict[str, Any]:
    """The next message that is not a heartbeat or a presence event (tests/test_presence.py
    checks those)."""
    async with asyncio.timeout(timeout_s):
        while True:
            message: dict[str, Any] = json.loads(await connection.recv())
            if message["type"] != "heartbeat" and message["type"] not in PRESENCE_EVENTS:
                return message


async def test_ws_carries_envelopes_and_subscriptions(server: Server) -> None:
    alice = sign("alice")
    async with httpx.AsyncClient() as client:
        first = await make_discussion(client, server, alice)
        second = await make_discussion(client, server, alice)
        async with open_ws(server, alice, [first]) as ws:
            posted = await post(client, server, alice, first, "over the socket")
            event = await receive(ws)
            assert event["type"] == "response_posted"
            assert event["payload"]["response"]["id"] == posted["id"]
            assert event["id"] and event["discussion_id"] == first

            await ws.send(json.dumps({"type": "subscribe", "discussion_id": second}))
            assert await receive(ws) == {"type": "subscribed", "discussion_id": second}
            await post(client, server, alice, second, "second discussion")
            assert (await receive(ws))["discussion_id"] == second

            await ws.send(json.dumps({"type": "unsubscribe", "discussion_id": first}))
            assert await receive(ws) == {"type": "unsubscribed", "discussion_id": first}
            await post(client, server, alice, first, "not for us any more")
            last = await post(client, server, alice, second, "still for us")
            assert (await receive(ws))["payload"]["response"]["id"] == last["id"]


async def test_ws_resume_replays_missed_and_garbage_gets_sync_required(server: Server) -> None:
    alice = sign("alice")
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, server, alice)
        async with open_ws(server, alice, [discussion]) as ws:
            await post(client, server, alice, discussion, "seen")
            seen = await receive(ws)
        missed = [await post(client, server, alice, discussion, f"missed {i}") for i in range(3)]
        # By query on connect, as a page rebuilding its socket does ...
        async with open_ws(server, alice, [discussion], last_event_id=seen["id"]) as ws:
            replayed = [await receive(ws) for _ in missed]
            assert [e["payload"]["response"]["id"] for e in replayed] == [m["id"] for m in missed]
            # ... and by message, on a live socket.
            await ws.send(json.dumps({"type": "resume", "last_event_id": seen["id"]}))
            again = [await receive(ws) for _ in missed]
            assert [e["id"] for e in again] == [e["id"] for e in replayed]
            await ws.send(json.dumps({"type": "resume", "last_event_id": "garbage"}))
            notice = await receive(ws)
            assert notice["type"] == "sync_required"
            assert notice["payload"]["reason"] == "invalid_cursor"
            live = await post(client, server, alice, discussion, "after sync")
            assert (await receive(ws))["payload"]["response"]["id"] == live["id"]


async def test_ws_bad_messages_leave_the_connection_usable(embedded: Server) -> None:
    alice = sign("alice")
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, embedded, alice)
        private = await make_discussion(client, embedded, sign("carol"), visibility="private")
        async with open_ws(embedded, alice, [discussion]) as ws:
            cases: list[tuple[str, str]] = [
                ("{not json", "malformed_json"),
                ("[1, 2]", "malformed_message"),
                ('{"type": 7}', "malformed_message"),
                ('{"type": "launch"}', "unknown_type"),
                ('{"type": "subscribe"}', "invalid_field"),
                (json.dumps({"type": "subscribe", "discussion_id": private}), "not_found"),
                ('{"type": "resume", "last_event_id": 5}', "invalid_field"),
                ('{"type": "auth", "token": "not.a.jwt"}', "invalid_token"),
                (json.dumps({"type": "auth", "token": sign("mallory")}), "forbidden"),
                (json.dumps({"type": "typing", "discussion_id": discussion, "typing": "yes"}), "invalid_field"),
                (json.dumps({"type": "typing", "discussion_id": private, "typing": True}), "not_found"),
                ('{"type": "presence", "status": "asleep"}', "invalid_field"),
            ]
            for raw, code in cases:
                await ws.send(raw)
                reply = await receive(ws)
                assert reply["type"] == "error", raw
                assert reply["code"] == code, raw
            await ws.send('{"type": "ping"}')
            assert await receive(ws) == {"type": "pong"}
            live = await post(client, embedded, alice, discussion, "still usable")
            assert (await receive(ws))["payload"]["response"]["id"] == live["id"]


async def test_ws_refuses_oversized_frames(embedded: Server) -> None:
    alice = sign("alice")
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, embedded, alice)
    # The close frame comes at once, but in about one try in four Hypercorn does not end the TCP
    # connection after the closing handshake (both serving paths); the client then ends it after
    # its close_timeout, which websockets checks only when its keepalive timer wakes (every 20 s
    # by default): short ones, so `recv` raises in about a second then rather than in 20.
    fast_close = {"close_timeout": 1, "ping_interval": 0.5}
    async with open_ws(embedded, alice, [discussion], connect_options=fast_close) as ws:
        await ws.send(json.dumps({"type": "ping", "pad": secrets.token_hex(64 * 1024)}))
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


async def test_ws_handshake_checks_origin_token_and_access(start_server: Callable[..., Server], tmp_path: Path) -> None:
    server = start_server(PARLEY_ALLOWED_ORIGINS="https://parley.example, https://app.parley.example")
    (tmp_path / "second").mkdir()
    same_origin = start_server(tmp_path / "second")
    alice = sign("alice")
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, server, alice)
        private = await make_discussion(client, server, sign("carol"), visibility="private")
        other = await make_discussion(client, same_origin, alice)
    for origin in ("https://parley.example", "https://app.parley.example"):
        async with open_ws(server, alice, [discussion], origin=origin):
            pass
    refusals: list[tuple[Server, str, str | None, list[str], int]] = [
        (server, alice, "https://evil.example", [discussion], 403),
        (server, alice, f"http://127.0.0.1:{server.port}", [discussion], 403),  # not listed
        (same_origin, alice, "https://evil.example", [other], 403),
        (server, "not.a.jwt", None, [discussion], 401),
        (server, alice, None, [private], 404),
        (server, alice, None, ["nope"], 404),
    ]
    for target, token, origin, discussions, status in refusals:
        with pytest.raises(InvalidStatus) as refused:
            async with open_ws(target, token, discussions, origin=origin):
                pass
        assert refused.value.response.status_code == status, (origin, discussions)
    # Same origin is the default when PARLEY_ALLOWED_ORIGINS is unset.
    async with open_ws(same_origin, alice, [other], origin=f"http://127.0.0.1:{same_origin.port}"):
        assert await metric(same_origin, 'parley_connections{transport="ws"}') == 1
    for _ in range(100):
        if await metric(same_origin, 'parley_connections{transport="ws"}') == 0:
            break
        await asyncio.sleep(0.05)
    assert await metric(same_origin, "parley_subscriptions") == 0


async def test_ws_expiry_closes_4001_unless_refreshed(start_server: Callable[..., Server]) -> None:
    server = start_server(PARLEY_HEARTBEAT_S="0.2")
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, server, sign("alice"))
    async with open_ws(server, sign("alice", ttl_s=2), [discussion]) as ws:
        expired = await receive(ws, timeout_s=8)
        assert expired["type"] == "auth_expired"
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
    async with open_ws(server, sign("alice", ttl_s=2), [discussion]) as ws:
        await ws.send(json.dumps({"type": "auth", "token": sign("alice", ttl_s=3600)}))
        assert (await receive(ws))["type"] == "auth_ok"
        # Well past the first token's expiry the socket still carries heartbeats and events.
        heartbeats = 0
        async with asyncio.timeout(8):
            while heartbeats < 20:
                heartbeats += json.loads(await ws.recv())["type"] == "heartbeat"
        async with httpx.AsyncClient() as client:
            live = await post(client, server, sign("alice"), discussion, "refreshed")
        assert (await receive(ws))["payload"]["response"]["id"] == live["id"]


async def poll(
    client: httpx.AsyncClient, server: Server, token: str, discussions: list[str], **params: str
) -> httpx.Response:
    query = [("discussion", d) for d in discussions] + list(params.items())
    return await client.get(server.url + "/poll", params=query, headers=bearer(token), timeout=40)


def without_presence(body: dict[str, Any]) -> dict[str, Any]:
    """A poll answer less presence events (a poller is present too; tests/test_presence.py
    checks those)."""
    return {**body, "events": [e for e in body["events"] if e["type"] not in PRESENCE_EVENTS]}


async def test_poll_answers_at_once_or_empty_at_timeout_without_gaps(server: Server) -> None:
    alice = sign("alice")
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, server, alice)
        empty = await poll(client, server, alice, [discussion], timeout="0.3")
        assert empty.status_code == 200
        assert empty.headers["content-type"].startswith("application/json")
        assert without_presence(empty.json())["events"] == []
        cursor = empty.json()["cursor"]
        posted = [await post(client, server, alice, discussion, f"polled {i}") for i in range(3)]
        first = without_presence((await poll(client, server, alice, [discussion], cursor=cursor)).json())
        ids = [e["payload"]["response"]["id"] for e in first["events"]]
        assert ids == [p["id"] for p in posted]
        assert first["cursor"] == first["events"][-1]["id"]
        # A waiting poll answers as soon as an event arrives.
        waiting = asyncio.create_task(poll(client, server, alice, [discussion], cursor=first["cursor"], timeout="20"))
        await asyncio.sleep(0.3)
        live = await post(client, server, alice, discussion, "while waiting")
        second = without_presence((await waiting).json())
        assert [e["payload"]["response"]["id"] for e in second["events"]] == [live["id"]]
        idle = (await poll(client, server, alice, [discussion], cursor=second["cursor"], timeout="0.2")).json()
        assert without_presence(idle)["events"] == []


async def test_poll_bad_input(embedded: Server) -> None:
    alice = sign("alice")
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, embedded, alice)
        for garbage in ("garbage", "zz.1-1", "abcdef.1-0"):
            body = (await poll(client, embedded, alice, [discussion], cursor=garbage, timeout="5")).json()
            [notice] = body["events"]
            assert notice["type"] == "sync_required"
            assert body["cursor"] == notice["id"]
        for timeout in ("31", "-1", "soon", "nan"):
            r = await poll(client, embedded, alice, [discussion], timeout=timeout)
            assert r.status_code == 422, timeout
        assert (await client.get(embedded.url + "/poll", params={"discussion": discussion})).status_code == 401
        assert (await poll(client, embedded, alice, ["nope"])).status_code == 404
        assert await metric(embedded, 'parley_connections{transport="poll"}') == 0
        assert await metric(embedded, "parley_subscriptions") == 0
