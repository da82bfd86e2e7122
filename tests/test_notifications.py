"""Notifications (issue 6) against real server processes, Redis and a loopback push service.

Absence is never asserted by waiting: the worker handles the log in order, so when a later
notification has arrived, an earlier event that should have notified nobody has been handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.log import topics
from app.log.events import envelope_body

from .push_service import Browser, PushService
from .support import OwnRedisEventLog, Server, SseEvent, SseReader, bearer, json_headers, sign
from .test_stream import make_discussion, open_stream

pytestmark = pytest.mark.slow

ARRIVAL_S = 5.0  # FR-006/007: within 5 seconds


@pytest.fixture(params=["embedded", "redis"])
def server(request: pytest.FixtureRequest, start_server: Callable[..., Server]) -> Server:
    # Loopback push endpoints allowed: the tests' push service listens on 127.0.0.1.
    if request.param == "redis":
        return start_server(
            REDIS_URL=request.getfixturevalue("redis_url"),
            PARLEY_REDIS_PREFIX=request.getfixturevalue("redis_prefix"),
            PARLEY_PUSH_ALLOW_INSECURE="1",
        )
    return start_server(PARLEY_PUSH_ALLOW_INSECURE="1")


async def respond(
    client: httpx.AsyncClient, server: Server, token: str, discussion: str, body: str, parent: str | None = None
) -> dict[str, Any]:
    payload: dict[str, Any] = {"body": body}
    if parent is not None:
        payload["parent_id"] = parent
    r = await client.post(f"{server.url}/api/discussions/{discussion}/responses", json=payload, headers=bearer(token))
    assert r.status_code == 201, r.text
    return dict(r.json())


async def next_of(stream: SseReader, *types: str, timeout_s: float = ARRIVAL_S) -> SseEvent:
    """The next event of one of these types (others, e.g. `activity` updates, are passed over)."""
    async with asyncio.timeout(timeout_s):
        while True:
            event = await stream.next_event()
            if event.event in types:
                return event


async def notification(stream: SseReader, timeout_s: float = ARRIVAL_S) -> dict[str, Any]:
    event = await next_of(stream, "notification", timeout_s=timeout_s)
    assert event.json["type"] == "notification"
    value: dict[str, Any] = event.json["payload"]["notification"]
    return value


async def notifications(client: httpx.AsyncClient, server: Server, token: str, **params: str) -> list[dict[str, Any]]:
    r = await client.get(server.url + "/api/notifications", params=params, headers=bearer(token))
    assert r.status_code == 200, r.text
    return list(r.json())


async def set_preferences(client: httpx.AsyncClient, server: Server, token: str, **prefs: bool) -> dict[str, Any]:
    r = await client.put(server.url + "/api/notification-preferences", json=prefs, headers=bearer(token))
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_reply_and_mention_arrive_across_two_processes(
    start_server: Callable[..., Server], redis_url: str, redis_prefix: str
) -> None:
    """Posted on one process, delivered on the stream held by the other, over Redis."""
    first = start_server(REDIS_URL=redis_url, PARLEY_REDIS_PREFIX=redis_prefix)
    second = start_server(REDIS_URL=redis_url, PARLEY_REDIS_PREFIX=redis_prefix)
    bob, carol = sign("bob", "Bob"), sign("carol")
    async with httpx.AsyncClient(timeout=10) as client:
        discussion = await make_discussion(client, first, carol)
        mine = await respond(client, first, bob, discussion, "Plant more oaks.")
        async with open_stream(second, bob, []) as stream:
            reply = await respond(client, first, carol, discussion, "Why oaks?", parent=mine["id"])
            got_reply = await notification(stream)
            mention = await respond(client, first, carol, discussion, "What does @bob think of beeches?")
            got_mention = await notification(stream)
        listed = await notifications(client, first, bob)
    assert got_reply["type"] == "reply" and got_reply["priority"] == "normal"
    assert got_reply["response_id"] == reply["id"] and got_reply["discussion_id"] == discussion
    assert got_reply["actor"] == {"id": "carol", "name": "carol"}
    assert got_mention["type"] == "mention" and got_mention["priority"] == "high"
    assert got_mention["response_id"] == mention["id"]
    # The REST list is the source of truth, newest first, with the same stable ids.
    assert [n["id"] for n in listed] == [got_mention["id"], got_reply["id"]]
    assert all(n["read_at"] is None for n in listed)


async def test_nobody_is_notified_of_their_own_action_and_private_mentions_stay_private(server: Server) -> None:
    alice, bob, eve = sign("alice"), sign("bob"), sign("eve")
    async with httpx.AsyncClient(timeout=10) as client:
        # Eve exists (she signed in) but is not a member: mentioning her must not notify her.
        await notifications(client, server, eve)
        private = await make_discussion(client, server, alice, visibility="private", members=["bob"])
        async with open_stream(server, alice, []) as alice_stream, open_stream(server, eve, []) as eve_stream:
            mine = await respond(client, server, alice, private, "Note to @alice and @eve")
            await respond(client, server, alice, private, "Replying to myself", parent=mine["id"])
            await respond(client, server, bob, private, "@alice @eve hello")
            got = await notification(alice_stream)
            public = await make_discussion(client, server, alice)
            await respond(client, server, bob, public, "@eve over here")
            got_eve = await notification(eve_stream)
    assert got["type"] == "mention" and got["actor"]["id"] == "bob"
    assert got_eve["discussion_id"] == public  # not the private one she cannot read


async def test_preferences_switch_each_kind_off(server: Server) -> None:
    bob, carol = sign("bob"), sign("carol")
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(server.url + "/api/notification-preferences", headers=bearer(bob))
        assert r.json() == {"replies": True, "mentions": True, "followed": False, "common_ground": True, "push": True}
        discussion = await make_discussion(client, server, carol)
        mine = await respond(client, server, bob, discussion, "A first thought")
        async with open_stream(server, bob, []) as stream:
            # replies off: a reply notifies nothing; the mention after it arrives first.
            assert (await set_preferences(client, server, bob, replies=False))["replies"] is False
            await respond(client, server, carol, discussion, "a reply", parent=mine["id"])
            await respond(client, server, carol, discussion, "hey @bob")
            assert (await notification(stream))["type"] == "mention"
            # mentions off, replies on: the mention notifies nothing; the reply arrives first.
            prefs = await set_preferences(client, server, bob, replies=True, mentions=False)
            assert prefs == {"replies": True, "mentions": False, "followed": False, "common_ground": True, "push": True}
            await respond(client, server, carol, discussion, "again @bob")
            await respond(client, server, carol, discussion, "another reply", parent=mine["id"])
            assert (await notification(stream))["type"] == "reply"
            # followed: off by default, an `activity` update but no notification ...
            r = await client.put(f"{server.url}/api/discussions/{discussion}/follow", headers=bearer(bob))
            assert r.status_code == 200
            await respond(client, server, carol, discussion, "news 1")
            update = await next_of(stream, "activity", "notification")
            assert update.event == "activity"
            assert update.json["payload"]["discussion_id"] == discussion
            assert update.json["payload"]["unread_count"] >= 1
            # ... on: one activity notification, and no second one while it is unread (batched).
            await set_preferences(client, server, bob, followed=True)
            await respond(client, server, carol, discussion, "news 2")
            first = await notification(stream)
            await respond(client, server, carol, discussion, "news 3")
            await respond(client, server, carol, discussion, "a last reply", parent=mine["id"])
            second = await notification(stream)
    assert first["type"] == "activity" and first["discussion_id"] == discussion
    assert second["type"] == "reply"


async def test_one_notification_whatever_the_number_of_tabs(server: Server) -> None:
    bob, carol = sign("bob"), sign("carol")
    async with httpx.AsyncClient(timeout=10) as client:
        discussion = await make_discussion(client, server, carol)
        async with contextlib.AsyncExitStack() as tabs:
            streams = [await tabs.enter_async_context(open_stream(server, bob, [discussion])) for _ in range(3)]
            await respond(client, server, carol, discussion, "@bob, one for you")
            seen = [await notification(stream) for stream in streams]
            assert len({n["id"] for n in seen}) == 1
            [listed] = await notifications(client, server, bob, unread="true")
            assert listed["id"] == seen[0]["id"]
            # Reading it in one tab tells the others (and every device) to mark it read.
            r = await client.post(f"{server.url}/api/notifications/{listed['id']}/read", headers=bearer(bob))
            assert r.status_code == 200 and r.json()["read_at"] is not None
            for stream in streams:
                read = await next_of(stream, "notification_read")
                assert read.json["payload"]["ids"] == [listed["id"]]
            assert await notifications(client, server, bob, unread="true") == []
            await respond(client, server, carol, discussion, "@bob two")
            await respond(client, server, carol, discussion, "@bob three")
            for stream in streams:
                await notification(stream)
                await notification(stream)
            r = await client.post(server.url + "/api/notifications/read-all", headers=bearer(bob))
            assert r.json()["read"] == 2
            for stream in streams:
                read = await next_of(stream, "notification_read")
                assert len(read.json["payload"]["ids"]) == 2


async def test_a_reconnecting_client_receives_what_it_missed(server: Server) -> None:
    """NFR-009: notifications are durable events on the user's topic; a stream resumed with
    its last cursor replays them."""
    bob, carol = sign("bob"), sign("carol")
    async with httpx.AsyncClient(timeout=10) as client:
        discussion = await make_discussion(client, server, carol)
        async with open_stream(server, bob, []) as stream:
            await respond(client, server, carol, discussion, "@bob first")
            first = await next_of(stream, "notification")
        await respond(client, server, carol, discussion, "@bob while you were away")
        while True:  # handled by the worker while bob had no stream open
            if len(await notifications(client, server, bob)) == 2:
                break
            await asyncio.sleep(0.05)
        async with open_stream(server, bob, [], headers={"Last-Event-ID": first.id or ""}) as stream:
            missed = await notification(stream)
        listed = await notifications(client, server, bob)
    assert missed["id"] == listed[0]["id"] and missed["excerpt"] == "@bob while you were away"


async def wait_until(check: Callable[[], Any], timeout_s: float = 15.0) -> None:
    """Poll a condition the server's side effects will make true (not a timing assertion)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if check():
                return
            await asyncio.sleep(0.05)


def subscription_count(server: Server, endpoint: str) -> int:
    with contextlib.closing(sqlite3.connect(server.workdir / "parley.db")) as db:
        row = db.execute("SELECT count(*) FROM push_subscriptions WHERE endpoint = ?", (endpoint,)).fetchone()
        return int(row[0])


@pytest.fixture
def push_service() -> Any:
    with PushService() as service:
        yield service


async def test_web_push_reaches_the_loopback_push_service(server: Server, push_service: PushService) -> None:
    """Bob has no page open: the mention goes out as a Web Push, VAPID-signed and encrypted."""
    bob, carol = sign("bob"), sign("carol")
    browser = push_service.browser("bob-laptop")
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(server.url + "/api/push/vapid-public-key", headers=bearer(bob))
        key = r.json()["key"]
        r = await client.post(server.url + "/api/push/subscriptions", json=browser.subscription, headers=bearer(bob))
        assert r.status_code == 201, r.text
        r = await client.post(server.url + "/api/push/subscriptions", json=browser.subscription, headers=bearer(bob))
        assert r.status_code == 200  # the same browser again: one subscription
        discussion = await make_discussion(client, server, carol)
        await respond(client, server, carol, discussion, "@bob are you there?")
        await wait_until(lambda: push_service.received_by("bob-laptop") or push_service.errors)
        assert push_service.errors == []
        [push] = push_service.received_by("bob-laptop")
        [listed] = await notifications(client, server, bob)
    assert push.payload["notification"]["id"] == listed["id"]
    assert push.payload["notification"]["type"] == "mention"
    assert push.headers["urgency"] == "high"
    assert int(push.headers["ttl"]) > 0
    assert push.headers["authorization"].split("k=")[1].strip() == key


async def test_gone_subscriptions_are_deleted_and_hanging_services_do_not_block(
    start_server: Callable[..., Server], push_service: PushService
) -> None:
    server = start_server(PARLEY_PUSH_ALLOW_INSECURE="1", PARLEY_PUSH_TIMEOUT_S="1", PARLEY_PUSH_BACKOFF_S="0.1")
    bob, dan, carol = sign("bob"), sign("dan"), sign("carol")
    gone = push_service.browser("bob-old-phone", "gone")
    hanging = push_service.browser("dan-stuck", "hang")
    fine = push_service.browser("bob-laptop")
    async with httpx.AsyncClient(timeout=10) as client:
        for token, browser in ((bob, gone), (bob, fine), (dan, hanging)):
            r = await client.post(
                server.url + "/api/push/subscriptions", json=browser.subscription, headers=bearer(token)
            )
            assert r.status_code == 201, r.text
        discussion = await make_discussion(client, server, carol)
        await respond(client, server, carol, discussion, "@dan hello")  # dan's service hangs ...
        await respond(client, server, carol, discussion, "@bob hello")  # ... bob's push still goes out
        await wait_until(lambda: push_service.received_by("bob-laptop"))
        await wait_until(lambda: subscription_count(server, gone.endpoint) == 0)
        assert subscription_count(server, fine.endpoint) == 1
        # The hanging service was timed out and tried 1 + 3 times (NFR-011), then given up.
        await wait_until(lambda: push_service.attempts.get("/push/dan-stuck") == 4, timeout_s=30)
        await wait_until(lambda: push_service.attempts.get("/push/bob-old-phone") == 1)
    assert push_service.errors == []


async def test_bad_input(start_server: Callable[..., Server]) -> None:
    server = start_server()  # production defaults: https push endpoints only
    bob, carol = sign("bob"), sign("carol")
    valid = Browser("https://push.example.net/send/abc").subscription
    cases: list[tuple[str, str, Any, int]] = [
        ("PUT", "/api/notification-preferences", {"replies": True, "sms": True}, 422),
        ("PUT", "/api/notification-preferences", {"replies": "yes"}, 422),
        ("PUT", "/api/notification-preferences", {"replies": None}, 422),
        ("PUT", "/api/notification-preferences", {"replies": False, "push": 1}, 422),
        ("PUT", "/api/notification-preferences", [True], 400),
        ("POST", "/api/push/subscriptions", {**valid, "endpoint": "not a url"}, 422),
        ("POST", "/api/push/subscriptions", {**valid, "endpoint": "ftp://push.example.net/x"}, 422),
        ("POST", "/api/push/subscriptions", {**valid, "endpoint": "https://" + "a" * 3000}, 422),
        ("POST", "/api/push/subscriptions", {**valid, "keys": {"p256dh": "AAAA", "auth": valid["keys"]["auth"]}}, 422),
        ("POST", "/api/push/subscriptions", {**valid, "keys": {"p256dh": "B" + "A" * 86, "auth": "x"}}, 422),
        ("POST", "/api/push/subscriptions", {**valid, "keys": {"p256dh": valid["keys"]["p256dh"], "auth": "!!"}}, 422),
        ("POST", "/api/push/subscriptions", {"endpoint": valid["endpoint"]}, 422),
        ("DELETE", "/api/push/subscriptions", {}, 422),
        ("POST", "/api/notifications/nope/read", None, 404),
        ("POST", "/api/notifications/" + "x" * 500 + "/read", None, 404),
        ("GET", "/api/notifications?unread=maybe", None, 422),
        ("GET", "/api/notifications?limit=0", None, 422),
    ]
    async with httpx.AsyncClient(timeout=10) as client:
        for method, path, body, status in cases:
            r = await client.request(method, server.url + path, json=body, headers=bearer(bob))
            assert r.status_code == status, (method, path, r.text)
            assert "code" in r.json()["error"]
        r = await client.request(
            "PUT", server.url + "/api/notification-preferences", content=b"{", headers=json_headers(bob)
        )
        assert r.status_code == 400
        # Nothing was stored by the refused requests.
        r = await client.get(server.url + "/api/notification-preferences", headers=bearer(bob))
        assert r.json()["replies"] is True
        # Loopback and plain-http endpoints are refused unless explicitly allowed (SSRF).
        for endpoint in ("http://push.example.net/x", "https://127.0.0.1/x", "https://localhost/x"):
            r = await client.post(
                server.url + "/api/push/subscriptions", json={**valid, "endpoint": endpoint}, headers=bearer(bob)
            )
            assert r.status_code == 422, endpoint
        for path in ("/api/notifications", "/api/notification-preferences", "/api/push/vapid-public-key"):
            assert (await client.get(server.url + path)).status_code == 401
        # Someone else's notification does not exist for the caller.
        discussion = await make_discussion(client, server, carol)
        async with open_stream(server, bob, []) as stream:
            await respond(client, server, carol, discussion, "@bob hi")
            mine = await notification(stream)
        r = await client.post(f"{server.url}/api/notifications/{mine['id']}/read", headers=bearer(carol))
        assert r.status_code == 404
        # The service worker is served from the root so that its scope can be the whole site.
        r = await client.get(server.url + "/sw.js")
        assert r.status_code == 200 and "javascript" in r.headers["content-type"]
        assert r.headers["service-worker-allowed"] == "/"
        assert "showNotification" in r.text


async def test_worker_killed_mid_batch_loses_nothing(
    tmp_path: Path, start_server: Callable[..., Server], redis_url: str, redis_prefix: str
) -> None:
    """SIGKILL the process holding the worker lease in the middle of a batch; after it is
    restarted every notification is stored once and reaches the stream."""
    count = 60
    env = {
        "REDIS_URL": redis_url,
        "PARLEY_REDIS_PREFIX": redis_prefix,
        "PARLEY_NOTIFY_LEASE_S": "1.5",
        # Slow the worker so the burst is one long batch the kill lands in the middle of.
        "PARLEY_NOTIFY_EVENT_DELAY_MS": "80",
    }
    worker = start_server(**env)  # first up: holds the lease
    front = start_server(**env)
    bob, carol = sign("bob"), sign("carol")
    received: dict[str, int] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        discussion = await make_discussion(client, front, carol)
        mine = await respond(client, front, bob, discussion, "Tell me")
        async with open_stream(front, bob, []) as stream:
            posted = [
                (await respond(client, front, carol, discussion, f"reply {i}", parent=mine["id"]))["id"]
                for i in range(count)
            ]
            while True:  # the worker has started on the burst
                if await notifications(client, front, bob, limit="200"):
                    break
                await asyncio.sleep(0.02)
            assert worker.process is not None
            worker.process.send_signal(signal.SIGKILL)
            worker.process.wait(5)
            stored_at_kill = len(await notifications(client, front, bob, limit="200"))
            assert 0 < stored_at_kill < count, "the kill must land mid-batch for this test to mean anything"
            worker.start()  # the same server, restarted
            async with asyncio.timeout(60):
                while len(received) < count:
                    got = await notification(stream, timeout_s=60)
                    received[got["id"]] = received.get(got["id"], 0) + 1
        listed = await notifications(client, front, bob, limit="200")
    assert len(listed) == count
    assert sorted(n["response_id"] for n in listed) == sorted(posted)
    assert set(received) == {n["id"] for n in listed}


async def test_common_ground_notifies_followers(
    start_server: Callable[..., Server], redis_url: str, redis_prefix: str
) -> None:
    """The analysis (another component) appends `analysis_updated` to the shared log; here the
    test plays it, writing to the same Redis log the servers read."""
    server = start_server(REDIS_URL=redis_url, PARLEY_REDIS_PREFIX=redis_prefix)
    bob, dan, carol = sign("bob"), sign("dan"), sign("carol")
    log = OwnRedisEventLog(redis_url, prefix=redis_prefix, retention_s=3600)
    await log.open()
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            discussion = await make_discussion(client, server, carol)
            for token in (bob, dan):
                r = await client.put(f"{server.url}/api/discussions/{discussion}/follow", headers=bearer(token))
                assert r.status_code == 200
            await set_preferences(client, server, dan, common_ground=False)
            async with open_stream(server, bob, []) as bob_stream, open_stream(server, dan, []) as dan_stream:
                payload = {"new_common_ground": [{"id": "p1", "text": "Old trees matter"}]}
                body = envelope_body(
                    "analysis_updated",
                    discussion_id=discussion,
                    user={"id": "analyzer", "name": "analyzer"},
                    payload=payload,
                )
                await log.append(topics.discussion(discussion), "analysis_updated", body)
                got = await notification(bob_stream)
                # Dan switched common ground off: the next thing he gets is the mention after it.
                await respond(client, server, carol, discussion, "@dan see above")
                dan_got = await notification(dan_stream)
    finally:
        await log.close()
    assert got["type"] == "common_ground" and got["discussion_id"] == discussion
    assert got["excerpt"] == "Old trees matter"
    assert dan_got["type"] == "mention"
