"""Members of a private discussion, against real server processes (issue 15).

Adding a member lets them read and stream at once; removing one cuts their open streams (SSE on
both stream paths, WebSocket, a waiting long-poll) at once: each gets `access_revoked` and none
of the discussion's events after it. "None after it" is checked without waiting out a timer:
the streams also read a public discussion, and a post there after the removal (a sentinel) must
be the next thing they get, since every stream delivers in the log's one order. Two processes
on one Redis: the other process's cache and streams learn of the change through the log.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from .support import Server, SseReader, bearer, sign
from .test_access_audit_logs import audit_rows
from .test_stream import PRESENCE_EVENTS, make_discussion, open_stream, post
from .test_ws_poll import open_ws, poll, receive

pytestmark = pytest.mark.slow

WAIT_S = 10.0


async def set_member(
    client: httpx.AsyncClient, server: Server, token: str, discussion: str, user_id: str, *, member: bool
) -> httpx.Response:
    url = f"{server.url}/api/discussions/{discussion}/members/{user_id}"
    return await (client.put if member else client.delete)(url, headers=bearer(token))


async def next_sse(reader: SseReader) -> dict[str, Any]:
    """The next event's envelope that is not presence."""
    async with asyncio.timeout(WAIT_S):
        while True:
            event = await reader.next_event()
            if event.event not in PRESENCE_EVENTS:
                envelope: dict[str, Any] = event.json
                assert envelope["type"] == event.event
                return envelope


def describe(envelope: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """(type, discussion, response body) — what the assertions below compare."""
    response = envelope["payload"].get("response")
    return envelope["type"], envelope["discussion_id"], None if response is None else response["body"]


@pytest.fixture
def redis_env(redis_url: str, redis_prefix: str) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "PARLEY_REDIS_PREFIX": redis_prefix}


async def test_a_member_added_reads_and_streams_and_a_removed_one_loses_every_open_stream_at_once(
    start_server: Callable[..., Server], stream_path: dict[str, str], redis_env: dict[str, str]
) -> None:
    server = start_server(**redis_env, **stream_path)
    alice, bob, carol = sign("alice"), sign("bob"), sign("carol")
    async with httpx.AsyncClient(timeout=WAIT_S) as client:
        secret = await make_discussion(client, server, alice, visibility="private")
        public = await make_discussion(client, server, alice)
        # Not a member yet: 404 everywhere (and the stream refusal fills the access cache).
        assert (await client.get(f"{server.url}/api/discussions/{secret}", headers=bearer(bob))).status_code == 404
        refused = await client.get(f"{server.url}/stream", params={"discussion": secret}, headers=bearer(bob))
        assert refused.status_code == 404

        async with open_stream(server, bob, [public]) as before_joining:
            added = await set_member(client, server, alice, secret, "bob", member=True)
            assert added.status_code == 200, added.text
            assert added.json() == {"discussion_id": secret, "user_id": "bob", "member": True}
            granted = await next_sse(before_joining)
        assert describe(granted) == ("access_granted", secret, None)
        assert granted["payload"] == {"discussion_id": secret}
        # Again: nothing changes, nothing fires.
        assert (await set_member(client, server, alice, secret, "bob", member=True)).json()["member"] is True
        assert (await client.get(f"{server.url}/api/discussions/{secret}/responses", headers=bearer(bob))).is_success

        async with (
            open_stream(server, bob, [secret, public]) as sse,
            open_ws(server, bob, [secret, public]) as ws,
        ):
            waiting_poll = asyncio.create_task(poll(client, server, bob, [secret, public], timeout="25"))
            await post(client, server, alice, secret, "while a member")
            assert describe(await next_sse(sse)) == ("response_posted", secret, "while a member")
            assert describe(await receive(ws)) == ("response_posted", secret, "while a member")
            answer = (await waiting_poll).json()
            first_poll = [e for e in answer["events"] if e["type"] not in PRESENCE_EVENTS]
            # The poll may answer first with bob's own joins (his SSE and WebSocket, published
            # in one batch): the post is then next, read from the poll's cursor.
            for _ in range(5):
                if first_poll:
                    break
                answer = (
                    await poll(client, server, bob, [secret, public], cursor=answer["cursor"], timeout="10")
                ).json()
                first_poll = [e for e in answer["events"] if e["type"] not in PRESENCE_EVENTS]
            assert [describe(e) for e in first_poll] == [("response_posted", secret, "while a member")]

            waiting_poll = asyncio.create_task(poll(client, server, bob, [secret, public], timeout="25"))
            await asyncio.sleep(0.5)  # let the poll reach its wait (an early one gets the same by cursor-less read)
            removed = await set_member(client, server, alice, secret, "bob", member=False)
            assert removed.json() == {"discussion_id": secret, "user_id": "bob", "member": False}
            await post(client, server, alice, secret, "after the removal")
            await post(client, server, alice, public, "sentinel")

            revoked = await next_sse(sse)
            assert describe(revoked) == ("access_revoked", secret, None)
            assert revoked["payload"] == {"discussion_id": secret, "reason": "member_removed"}
            assert describe(await next_sse(sse)) == ("response_posted", public, "sentinel")
            assert describe(await receive(ws)) == ("access_revoked", secret, None)
            assert describe(await receive(ws)) == ("response_posted", public, "sentinel")
            polled = [e for e in (await waiting_poll).json()["events"] if e["type"] not in PRESENCE_EVENTS]
            assert describe(polled[0]) == ("access_revoked", secret, None)
            assert ("response_posted", secret, "after the removal") not in [describe(e) for e in polled]

            # The socket stays usable, but the discussion is gone from it.
            await ws.send(json.dumps({"type": "typing", "discussion_id": secret, "typing": True}))
            assert (await receive(ws))["type"] == "error"
            await ws.send(json.dumps({"type": "subscribe", "discussion_id": secret}))
            refusal = await receive(ws)
            assert refusal["type"] == "error" and refusal["code"] == "not_found"

        # Reconnecting, polling, REST: 404, and the follow is gone.
        stream = await client.get(f"{server.url}/stream", params={"discussion": secret}, headers=bearer(bob))
        assert stream.status_code == 404
        assert (await poll(client, server, bob, [secret], timeout="0")).status_code == 404
        assert (await client.get(f"{server.url}/api/discussions/{secret}", headers=bearer(bob))).status_code == 404
        # Removing a non-member: no change, no event; carol cannot even see it.
        assert (await set_member(client, server, alice, secret, "bob", member=False)).json()["member"] is False
        assert (await set_member(client, server, carol, secret, "bob", member=True)).status_code == 404


async def test_only_the_creator_changes_members_and_only_of_a_private_discussion(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = start_server(tmp_path)
    alice, bob = sign("alice"), sign("bob")
    async with httpx.AsyncClient(timeout=WAIT_S) as client:
        secret = await make_discussion(client, server, alice, visibility="private", members=["bob"])
        public = await make_discussion(client, server, alice)

        async def refused(token: str, discussion: str, user_id: str, member: bool) -> tuple[int, str]:
            r = await set_member(client, server, token, discussion, user_id, member=member)
            return r.status_code, r.json()["error"]["code"]

        # A member who is not the creator: 403 (they can see it exists); a stranger: 404.
        assert await refused(bob, secret, "carol", True) == (403, "forbidden")
        assert await refused(bob, secret, "bob", False) == (403, "forbidden")
        assert await refused(sign("carol"), secret, "carol", True) == (404, "not_found")
        assert await refused(alice, public, "bob", True) == (409, "discussion_not_private")
        assert await refused(alice, secret, "alice", False) == (422, "invalid_field")
        assert await refused(alice, secret, "x" * 201, True) == (422, "invalid_field")
        assert await refused(alice, "nope", "bob", True) == (404, "not_found")
        r = await client.put(f"{server.url}/api/discussions/{secret}/members/carol")
        assert r.status_code == 401
        # Bob is still a member: none of the refusals changed anything.
        assert (await client.get(f"{server.url}/api/discussions/{secret}", headers=bearer(bob))).status_code == 200
    assert audit_rows(tmp_path / "parley.db") == [
        ("alice", "membership.set", f"discussion:{secret}", {"members": ["bob"]})
    ]


async def test_the_other_process_learns_of_changes_through_the_log(
    start_server: Callable[..., Server], redis_env: dict[str, str], tmp_path: Path
) -> None:
    # One database and one Redis, as two servers of one deployment share them.
    a, b = (start_server(tmp_path, **redis_env) for _ in range(2))
    alice, bob = sign("alice"), sign("bob")
    async with httpx.AsyncClient(timeout=WAIT_S) as client:
        secret = await make_discussion(client, a, alice, visibility="private")
        public = await make_discussion(client, a, alice)
        # b caches the readers without bob.
        assert (
            await client.get(f"{b.url}/stream", params={"discussion": secret}, headers=bearer(bob))
        ).status_code == 404
        async with open_stream(b, bob, [public]) as on_b:
            assert (await set_member(client, a, alice, secret, "bob", member=True)).status_code == 200
            assert describe(await next_sse(on_b)) == ("access_granted", secret, None)
        # b's hub forgot its cache before it handed bob the event: connecting there works now.
        async with open_stream(b, bob, [secret, public]) as on_b:
            await post(client, a, alice, secret, "from a")
            assert describe(await next_sse(on_b)) == ("response_posted", secret, "from a")
            assert (await set_member(client, a, alice, secret, "bob", member=False)).status_code == 200
            await post(client, a, alice, secret, "after the removal")
            await post(client, b, alice, public, "sentinel")
            assert describe(await next_sse(on_b)) == ("access_revoked", secret, None)
            assert describe(await next_sse(on_b)) == ("response_posted", public, "sentinel")
        refused = await client.get(f"{b.url}/stream", params={"discussion": secret}, headers=bearer(bob))
        assert refused.status_code == 404
    assert audit_rows(tmp_path / "parley.db") == [
        ("alice", "membership.add", f"discussion:{secret}", {"user": "bob"}),
        ("alice", "membership.remove", f"discussion:{secret}", {"user": "bob"}),
    ]


async def test_deleting_an_account_cuts_its_streams_from_the_private_discussions_it_read(
    start_server: Callable[..., Server],
) -> None:
    server = start_server()
    alice, bob = sign("alice"), sign("bob")
    async with httpx.AsyncClient(timeout=WAIT_S) as client:
        ours = await make_discussion(client, server, alice, visibility="private", members=["bob"])
        bobs = await make_discussion(client, server, bob, visibility="private")
        public = await make_discussion(client, server, alice)
        async with open_stream(server, bob, [ours, bobs, public]) as stream:
            assert (await client.delete(f"{server.url}/api/me", headers=bearer(bob))).status_code == 204
            notices = [await next_sse(stream), await next_sse(stream)]
            await post(client, server, alice, ours, "after the deletion")
            await post(client, server, alice, public, "sentinel")
            assert describe(await next_sse(stream)) == ("response_posted", public, "sentinel")
    assert sorted((e["payload"]["discussion_id"], e["payload"]["reason"]) for e in notices) == sorted(
        [(ours, "account_deleted"), (bobs, "account_deleted")]
    )
