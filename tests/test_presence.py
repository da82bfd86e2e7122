"""Presence and typing end to end: real server processes sharing one real Redis, SSE streams.

Expiries are configured short (PARLEY_PRESENCE_TTL_S, PARLEY_TYPING_TTL_S) so a killed server's
ghost and an abandoned typing indicator go within seconds; deadlines for arrival are generous and
nothing asserts on how fast something happened.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from .support import Server, SseEvent, SseReader, bearer, json_headers, sign
from .test_stream import make_discussion, open_stream, post

pytestmark = pytest.mark.slow

SHORT = {
    "PARLEY_PRESENCE_TTL_S": "2",
    "PARLEY_PRESENCE_GRACE_S": "0.5",
    "PARLEY_PRESENCE_SWEEP_S": "0.2",
    "PARLEY_TYPING_TTL_S": "1.5",
}
PRESENCE_TYPES = {"user_joined", "user_left", "presence_changed", "typing_started", "typing_stopped"}


@pytest.fixture
def pair(start_server: Callable[..., Server], redis_url: str, redis_prefix: str, tmp_path: Path) -> list[Server]:
    env = {"REDIS_URL": redis_url, "PARLEY_REDIS_PREFIX": redis_prefix, **SHORT}
    return [start_server(tmp_path, **env) for _ in range(2)]


async def until(reader: SseReader, want: Callable[[SseEvent], bool], timeout_s: float = 10.0) -> list[SseEvent]:
    """Every event up to and including the first that `want` accepts."""
    seen: list[SseEvent] = []
    async with asyncio.timeout(timeout_s):
        while True:
            event = await reader.next_event()
            seen.append(event)
            if want(event):
                return seen


def is_(event_type: str, user: str | None = None) -> Callable[[SseEvent], bool]:
    return lambda e: e.event == event_type and (user is None or e.json["user"]["id"] == user)


def presence_only(events: list[SseEvent]) -> list[tuple[str, str]]:
    return [(e.event, e.json["user"]["id"]) for e in events if e.event in PRESENCE_TYPES]


async def put(client: httpx.AsyncClient, url: str, token: str, body: Any) -> httpx.Response:
    return await client.put(url, json=body, headers=bearer(token))


async def test_users_on_different_processes_see_each_other(pair: list[Server]) -> None:
    a, b = pair
    alice, bob = sign("alice", "Alice"), sign("bob", "Bob")
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, a, alice)
        async with open_stream(b, bob, [discussion]) as on_b:
            await until(on_b, is_("user_joined", "bob"))
            async with open_stream(a, alice, [discussion]) as on_a:
                joined = (await until(on_b, is_("user_joined", "alice")))[-1].json
                assert joined["user"] == {"id": "alice", "name": "Alice"}
                assert joined["payload"] == {"status": "online"}
                assert joined["discussion_id"] == discussion
                r = await client.get(f"{b.url}/api/discussions/{discussion}/presence", headers=bearer(bob))
                assert r.status_code == 200
                here = r.json()
                assert here["count"] == 2
                assert {(p["id"], p["name"], p["status"]) for p in here["participants"]} == {
                    ("alice", "Alice", "online"),
                    ("bob", "Bob", "online"),
                }
                r = await client.get(f"{a.url}/api/discussions/{discussion}", headers=bearer(alice))
                assert r.json()["participant_count"] == 2

                # Typing on A reaches B; posting stops it at once, before the post arrives.
                typing_url = f"{a.url}/api/discussions/{discussion}/typing"
                assert (await put(client, typing_url, alice, {"typing": True})).status_code == 200
                started = (await until(on_b, is_("typing_started", "alice")))[-1]
                assert started.json["user"] == {"id": "alice", "name": "Alice"}
                r = await client.get(f"{b.url}/api/discussions/{discussion}/presence", headers=bearer(bob))
                assert r.json()["typing"] == [{"id": "alice", "name": "Alice"}]
                await post(client, b, alice, discussion, "done typing")
                tail = await until(on_b, is_("response_posted"))
                assert [e.event for e in tail] == ["typing_stopped", "response_posted"]

                # Away when the page is hidden (per user: applies to her stream on A).
                assert (await put(client, f"{b.url}/api/presence", alice, {"status": "away"})).status_code == 200
                changed = (await until(on_b, is_("presence_changed", "alice")))[-1]
                assert changed.json["payload"] == {"status": "away"}
                await until(on_a, is_("presence_changed", "alice"))
            # Alice closed her stream: after the grace period, she has left.
            left = (await until(on_b, is_("user_left", "alice")))[-1]
            assert left.json["payload"] == {"status": "offline"}
    # Presence events are ephemeral: a resume does not replay them.
    async with httpx.AsyncClient() as client, open_stream(a, bob, [discussion], last_event_id=joined["id"]) as again:
        await post(client, a, bob, discussion, "marker")
        replayed = await until(again, is_("response_posted", "bob"))
    assert [e.event for e in replayed if e.event in PRESENCE_TYPES - {"user_joined"}] == []


async def test_a_killed_server_leaves_no_ghost(pair: list[Server]) -> None:
    a, b = pair
    alice, bob = sign("alice", "Alice"), sign("bob", "Bob")
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, b, bob)
        async with open_stream(b, bob, [discussion]) as on_b:
            await until(on_b, is_("user_joined", "bob"))
            async with open_stream(a, alice, [discussion]):
                await until(on_b, is_("user_joined", "alice"))
                await put(client, f"{a.url}/api/discussions/{discussion}/typing", alice, {"typing": True})
                await until(on_b, is_("typing_started", "alice"))
                a.stop(signal.SIGKILL)  # no leave, no refresh: only expiry can clean up
                gone = await until(on_b, is_("user_left", "alice"), timeout_s=20)
            assert ("typing_stopped", "alice") in presence_only(gone)
            r = await client.get(f"{b.url}/api/discussions/{discussion}/presence", headers=bearer(bob))
            assert r.json() == {
                "count": 1,
                "participants": [{"id": "bob", "name": "Bob", "status": "online"}],
                "typing": [],
            }


async def test_typing_expires_and_a_flood_is_throttled(pair: list[Server]) -> None:
    a, b = pair
    alice, bob = sign("alice", "Alice"), sign("bob", "Bob")
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, a, alice)
        typing_url = f"{a.url}/api/discussions/{discussion}/typing"
        async with open_stream(b, bob, [discussion]) as on_b:
            await until(on_b, is_("user_joined", "bob"))
            # Without a further signal, typing ends by itself (PARLEY_TYPING_TTL_S).
            await put(client, typing_url, alice, {"typing": True})
            expired = await until(on_b, is_("typing_stopped", "alice"))
            assert presence_only(expired) == [("typing_started", "alice"), ("typing_stopped", "alice")]
            # Leave the throttle window of that stop behind (sleeping longer is always safe).
            await asyncio.sleep(0.6)
            # Thirty signals from several "tabs" on two servers: one broadcast, then one stop
            # (at once, or held back by the throttle and sent when its window ends).
            responses = await asyncio.gather(
                *(put(client, [a, b][i % 2].url + typing_url[len(a.url) :], alice, {"typing": True}) for i in range(30))
            )
            assert {r.status_code for r in responses} == {200}
            await put(client, typing_url, alice, {"typing": False})
            flood = await until(on_b, is_("typing_stopped", "alice"))
            await post(client, a, bob, discussion, "marker")
            after = await until(on_b, is_("response_posted"))
    assert presence_only(flood) == [("typing_started", "alice"), ("typing_stopped", "alice")]
    assert presence_only(after) == []


async def test_a_reload_does_not_flap(
    start_server: Callable[..., Server], redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    env = {"REDIS_URL": redis_url, "PARLEY_REDIS_PREFIX": redis_prefix, **SHORT, "PARLEY_PRESENCE_GRACE_S": "5"}
    a, b = start_server(tmp_path, **env), start_server(tmp_path, **env)
    alice, bob = sign("alice", "Alice"), sign("bob", "Bob")
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, a, alice)
        async with open_stream(b, bob, [discussion]) as on_b:
            await until(on_b, is_("user_joined", "bob"))
            async with open_stream(a, alice, [discussion]):
                await until(on_b, is_("user_joined", "alice"))
            async with open_stream(b, alice, [discussion]):  # the reloaded page, on the other server
                await post(client, a, bob, discussion, "marker")
                seen = await until(on_b, is_("response_posted"))
            assert presence_only(seen) == []


async def test_bad_input(pair: list[Server]) -> None:
    a, _ = pair
    alice, mallory = sign("alice"), sign("mallory")
    async with httpx.AsyncClient() as client:
        secret = await make_discussion(client, a, alice, visibility="private")
        for token in (mallory,):
            for method, path, body in [
                ("PUT", f"/api/discussions/{secret}/typing", {"typing": True}),
                ("GET", f"/api/discussions/{secret}/presence", None),
                ("PUT", "/api/discussions/nope/typing", {"typing": True}),
                ("GET", "/api/discussions/nope/presence", None),
            ]:
                r = await client.request(method, a.url + path, json=body, headers=bearer(token))
                assert r.status_code == 404, (path, r.text)
                assert r.json()["error"]["code"] == "not_found"
        cases: list[tuple[str, Any, int]] = [
            ("/api/presence", {"status": "busy"}, 422),
            ("/api/presence", {"status": "offline"}, 422),
            ("/api/presence", {}, 422),
            ("/api/presence", [1], 400),
            (f"/api/discussions/{secret}/typing", {"typing": "yes"}, 422),
            (f"/api/discussions/{secret}/typing", {"typing": 1}, 422),
            (f"/api/discussions/{secret}/typing", {}, 422),
        ]
        for path, body, status in cases:
            r = await client.put(a.url + path, json=body, headers=bearer(alice))
            assert r.status_code == status, (path, body, r.text)
        r = await client.put(a.url + "/api/presence", content=b"{oops", headers=json_headers(alice))
        assert r.status_code == 400
        r = await client.put(f"{a.url}/api/discussions/{secret}/typing", json={"typing": True})
        assert r.status_code == 401
        r = await client.get(f"{a.url}/api/discussions/{secret}/presence", headers=bearer(alice))
        assert r.json() == {"count": 0, "participants": [], "typing": []}  # nothing was stored


async def test_an_idle_stream_is_told_and_closed(start_server: Callable[..., Server]) -> None:
    """FR-035 on the embedded backend: a stream whose user does nothing gets `session_idle`,
    then the body ends; an active user's stream on the same server stays open."""
    server = start_server(
        PARLEY_IDLE_TIMEOUT_S="1",
        PARLEY_PRESENCE_TTL_S="0.6",
        PARLEY_HEARTBEAT_S="0.2",
        **{"PARLEY_PRESENCE_SWEEP_S": "0.2"},
    )
    alice = sign("alice")
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, server, alice)
        async with open_stream(server, alice, [discussion]) as stream:
            idle = await until(stream, is_("session_idle"), timeout_s=20)
            assert idle[-1].json["payload"] == {"reason": "idle"}
            with pytest.raises(StopAsyncIteration):
                async with asyncio.timeout(10):
                    await stream.next_event()  # the server ended the stream


async def test_a_server_stopping_for_a_restart_keeps_its_users_present(
    start_server: Callable[..., Server],
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    """SIGTERM: the stopping server's users linger for SHUTDOWN_GRACE_MS (30 s), not the normal
    grace (0.5 s here), so their clients can reconnect elsewhere without a leave and a join.
    Users of the servers that go on still leave after the normal grace.

    The default serving path (the lean stream front), which closes its streams, and so sends
    their leaves, after telling the tracker it is stopping. (With PARLEY_LEAN_STREAM=0 Hypercorn
    closes the streams only after the app's shutdown hooks ran: no leave is sent, and the
    connections go when their ttl runs out, 2 s here.)"""
    env = {"REDIS_URL": redis_url, "PARLEY_REDIS_PREFIX": redis_prefix, **SHORT}
    a, b = start_server(tmp_path, **env), start_server(tmp_path, **env)
    alice, bob, carol = sign("alice", "Alice"), sign("bob", "Bob"), sign("carol", "Carol")
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, b, bob)
        presence_url = f"{b.url}/api/discussions/{discussion}/presence"
        async with open_stream(b, bob, [discussion]) as on_b:
            await until(on_b, is_("user_joined", "bob"))
            async with open_stream(a, alice, [discussion]) as on_a:
                await until(on_b, is_("user_joined", "alice"))
                await until(on_a, is_("user_joined", "alice"))
                await asyncio.to_thread(a.stop, signal.SIGTERM)
                # Many times the normal grace, and past the connection ttl (2 s): B sweeps every 0.2 s.
                await asyncio.sleep(3.0)
                r = await client.get(presence_url, headers=bearer(bob))
                assert {p["id"] for p in r.json()["participants"]} == {"alice", "bob"}, r.json()
                await post(client, b, bob, discussion, "marker 1")
                seen = await until(on_b, is_("response_posted"))
                assert presence_only(seen) == []

            # The restarted server: Alice's client reconnects. No join: she never left.
            restarted = start_server(tmp_path, **env)
            async with open_stream(restarted, alice, [discussion]):
                await post(client, b, bob, discussion, "marker 2")
                seen = await until(on_b, is_("response_posted"))
                assert presence_only(seen) == []

                # Carol, on B, which is not stopping, closes her page: gone after the normal grace.
                async with open_stream(b, carol, [discussion]):
                    await until(on_b, is_("user_joined", "carol"))
                left = await until(on_b, is_("user_left", "carol"), timeout_s=10)
                assert ("user_left", "alice") not in presence_only(left)
            r = await client.get(presence_url, headers=bearer(bob))
            assert {p["id"] for p in r.json()["participants"]} >= {"alice", "bob"}
