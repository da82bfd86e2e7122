"""`GET /stream` against real server processes, on the embedded log and on Redis."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from .support import Server, SseEvent, SseReader, bearer, sign

pytestmark = pytest.mark.slow


@pytest.fixture(params=["embedded", "redis"])
def server(request: pytest.FixtureRequest, start_server: Callable[..., Server], stream_path: dict[str, str]) -> Server:
    if request.param == "redis":
        return start_server(
            REDIS_URL=request.getfixturevalue("redis_url"),
            PARLEY_REDIS_PREFIX=request.getfixturevalue("redis_prefix"),
            **stream_path,
        )
    return start_server(**stream_path)


@contextlib.asynccontextmanager
async def open_stream(
    server: Server, token: str, discussions: list[str], headers: dict[str, str] | None = None, **params: str
) -> AsyncIterator[SseReader]:
    query: list[tuple[str, str]] = [("discussion", d) for d in discussions] + list(params.items())
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=15.0)) as client,
        client.stream("GET", server.url + "/stream", params=query, headers={**bearer(token), **(headers or {})}) as r,
    ):
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream")
        yield SseReader(r.aiter_raw())


async def make_discussion(client: httpx.AsyncClient, server: Server, token: str, **body: Any) -> str:
    r = await client.post(server.url + "/api/discussions", json={"title": "Trees", **body}, headers=bearer(token))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def post(client: httpx.AsyncClient, server: Server, token: str, discussion: str, body: str) -> dict[str, Any]:
    r = await client.post(
        f"{server.url}/api/discussions/{discussion}/responses", json={"body": body}, headers=bearer(token)
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


# Presence events (user_joined when a stream opens, ...) ride the same streams; the tests here
# count the others. tests/test_presence.py checks presence events.
PRESENCE_EVENTS = frozenset({"user_joined", "user_left", "presence_changed", "typing_started", "typing_stopped"})


async def events(reader: SseReader, count: int, timeout_s: float = 5.0) -> list[SseEvent]:
    got: list[SseEvent] = []
    async with asyncio.timeout(timeout_s):
        while len(got) < count:
            event = await reader.next_event()
            if event.event not in PRESENCE_EVENTS:
                got.append(event)
    return got


async def metric(server: Server, name: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(server.url + "/metrics")).text
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_events_arrive_in_order_once(server: Server) -> None:
    alice = sign("alice")
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, server, alice)
        async with open_stream(server, alice, [discussion]) as stream:
            posted = [await post(client, server, alice, discussion, f"response {i}") for i in range(20)]
            received = await events(stream, 20)
            assert stream.retry_ms is not None
    assert [e.event for e in received] == ["response_posted"] * 20
    assert [e.json["payload"]["response"]["id"] for e in received] == [p["id"] for p in posted]
    ids = [e.id for e in received]
    assert len(set(ids)) == 20
    assert all(e.json["id"] == e.id for e in received)
    envelope = received[0].json
    assert envelope["discussion_id"] == discussion
    assert envelope["user"] == {"id": "alice", "name": "alice"}
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", envelope["ts"])


async def test_resume_with_last_event_id_gets_exactly_what_was_missed(server: Server) -> None:
    alice = sign("alice")
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, server, alice)
        other = await make_discussion(client, server, alice)
        both = [discussion, other]
        async with open_stream(server, alice, both) as stream:
            for i in range(5):
                await post(client, server, alice, discussion, f"before {i}")
            last_seen = (await events(stream, 5))[-1].id or ""
        # Resume by header (a browser's own reconnect), then by query (a rebuilt EventSource).
        for how in ("header", "query"):
            missed = [await post(client, server, alice, both[i % 2], f"missed {how} {i}") for i in range(6)]
            resume: dict[str, Any] = (
                {"headers": {"Last-Event-ID": last_seen}} if how == "header" else {"last_event_id": last_seen}
            )
            async with open_stream(server, alice, both, **resume) as stream:
                replayed = await events(stream, 6)
                live = await post(client, server, alice, other, f"live {how}")
                [after] = await events(stream, 1)
                last_seen = after.id or ""
            ids = [e.json["payload"]["response"]["id"] for e in replayed]
            assert ids == [m["id"] for m in missed], how
            assert after.json["payload"]["response"]["id"] == live["id"]


async def test_garbage_cursor_gets_sync_required_then_live_events(server: Server) -> None:
    alice = sign("alice")
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, server, alice)
        await post(client, server, alice, discussion, "old")
        cases: list[dict[str, Any]] = [
            {"headers": {"Last-Event-ID": "garbage"}},
            {"headers": {"Last-Event-ID": "0" * 500}},
            {"last_event_id": "zz.1-1\r\nevent: injected"},
        ]
        for case in cases:
            async with open_stream(server, alice, [discussion], **case) as stream:
                [notice] = await events(stream, 1)
                assert notice.event == "sync_required"
                assert notice.json["payload"]["reason"] == "invalid_cursor"
                live = await post(client, server, alice, discussion, "after sync")
                [event] = await events(stream, 1)
                assert event.json["payload"]["response"]["id"] == live["id"]
                assert notice.id is not None and event.id is not None


async def test_cursor_from_another_epoch_gets_sync_required(server: Server) -> None:
    alice = sign("alice")
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, server, alice)
        async with open_stream(server, alice, [discussion], headers={"Last-Event-ID": "abcdef.1-0"}) as stream:
            [notice] = await events(stream, 1)
    assert notice.event == "sync_required"
    assert notice.json["payload"]["reason"] == "unknown_epoch"


async def test_streams_need_a_token_and_read_access(server: Server) -> None:
    alice, bob = sign("alice"), sign("bob")
    async with httpx.AsyncClient() as client:
        private = await make_discussion(client, server, alice, visibility="private", members=["carol"])
        r = await client.get(server.url + "/stream", params={"discussion": private})
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthenticated"
        r = await client.get(server.url + "/stream", params={"discussion": private}, headers=bearer("not.a.jwt"))
        assert r.status_code == 401
        for who, expected in ((bob, 404), (sign("carol"), 200)):
            if expected == 404:
                r = await client.get(server.url + "/stream", params={"discussion": private}, headers=bearer(who))
                assert r.status_code == 404
                assert r.json()["error"]["code"] == "not_found"
            else:
                async with open_stream(server, who, [private]) as stream:
                    await post(client, server, alice, private, "for members")
                    [event] = await events(stream, 1)
                    assert event.json["payload"]["response"]["body"] == "for members"
        r = await client.get(server.url + "/stream", params={"discussion": "nope"}, headers=bearer(alice))
        assert r.status_code == 404


async def test_heartbeats_and_expiry(start_server: Callable[..., Server], stream_path: dict[str, str]) -> None:
    server = start_server(PARLEY_HEARTBEAT_S="0.2", **stream_path)
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, server, sign("alice"))
    # Signed last, so a slow start on a loaded machine does not eat its life (2-3 s: `exp` is
    # in whole seconds), which is many heartbeats long.
    short = sign("alice", ttl_s=3)
    async with open_stream(server, short, [discussion]) as stream:
        [expired] = await events(stream, 1, timeout_s=8)
        assert expired.event == "auth_expired"
        assert expired.id is None  # must not move the browser's Last-Event-ID
        assert stream.comments[1:].count("") >= 3  # heartbeats: empty comment lines
        with pytest.raises(StopAsyncIteration):
            await events(stream, 1)


async def test_disconnected_clients_leave_nothing_behind(server: Server) -> None:
    alice = sign("alice")
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, server, alice)
    for _ in range(3):
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(10):
                await stack.enter_async_context(open_stream(server, alice, [discussion]))
            assert await metric(server, "parley_subscriptions") == 10
            assert await metric(server, 'parley_connections{transport="sse"}') == 10
        for _ in range(100):
            if await metric(server, "parley_subscriptions") == 0:
                break
            await asyncio.sleep(0.05)
        assert await metric(server, "parley_subscriptions") == 0
        assert await metric(server, 'parley_connections{transport="sse"}') == 0
