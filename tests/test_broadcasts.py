"""Platform broadcasts (FR-032) against real server processes: an admin's broadcast reaches
every connected user on every transport (SSE, WebSocket, long-poll), on the embedded log and
on both of two processes sharing Redis; it stays listed while it lives; roles are enforced
by the running server as by the in-process app (tests/test_common_ground_rest.py)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from .support import Server, bearer, sign
from .test_notifications import next_of
from .test_stream import make_discussion, open_stream
from .test_ws_poll import open_ws, poll, receive

pytestmark = pytest.mark.slow

ARRIVAL_S = 10.0


@pytest.fixture(params=["embedded", "redis-two-processes"])
def servers(request: pytest.FixtureRequest, start_server: Callable[..., Server]) -> tuple[Server, Server]:
    if request.param == "embedded":
        only = start_server()
        return only, only
    env = {
        "REDIS_URL": request.getfixturevalue("redis_url"),
        "PARLEY_REDIS_PREFIX": request.getfixturevalue("redis_prefix"),
    }
    return start_server(**env), start_server(**env)


async def broadcast(client: httpx.AsyncClient, server: Server, token: str, **body: Any) -> httpx.Response:
    return await client.post(server.url + "/api/broadcasts", json=body, headers=bearer(token))


async def test_a_broadcast_reaches_every_transport_on_every_server(servers: tuple[Server, Server]) -> None:
    first, second = servers
    admin, reader = sign("root", roles=["admin"]), sign("reader")
    async with httpx.AsyncClient(timeout=10) as client:
        discussion = await make_discussion(client, first, reader)
        # Long-poll positions, taken before the broadcast: "from now on" on each server.
        cursors = {}
        for server in (first, second):
            empty = await poll(client, server, reader, [discussion], timeout="0")
            cursors[server.port] = empty.json()["cursor"]
        async with (
            open_stream(first, reader, [discussion]) as sse_first,
            open_stream(second, reader, []) as sse_second,
            open_ws(second, reader, [discussion]) as ws_second,
            open_ws(first, reader, []) as ws_first,
        ):
            # Nobody but an admin: 403 on either server, and nothing reaches anyone.
            refused = await broadcast(client, second, reader, message="Not from me")
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == "role_required"
            r = await broadcast(client, second, admin, message="Maintenance at noon", level="warning")
            assert r.status_code == 201, r.text
            sent = r.json()
            got = [(await next_of(sse, "broadcast", timeout_s=ARRIVAL_S)).json for sse in (sse_first, sse_second)]
            for ws in (ws_first, ws_second):
                async with asyncio.timeout(ARRIVAL_S):
                    while (message := await receive(ws))["type"] != "broadcast":
                        pass
                got.append(message)
            for server in (first, second):
                answer = (
                    await poll(client, server, reader, [discussion], cursor=cursors[server.port], timeout="10")
                ).json()
                got.extend(e for e in answer["events"] if e["type"] == "broadcast")
    assert len(got) == 6
    for envelope in got:
        assert envelope["payload"] == sent and envelope["discussion_id"] is None
        assert envelope["user"]["id"] == "root"
    # The refused broadcast is in no stream: the first broadcast each one saw was the admin's.
    assert {envelope["payload"]["message"] for envelope in got} == {"Maintenance at noon"}
    # Who broadcast is audited (issue 16); the refused attempt is not.
    with sqlite3.connect(first.workdir / "parley.db") as db:
        audited = db.execute(
            "SELECT actor_id, action, target FROM audit_log WHERE action = 'broadcast.send'"
        ).fetchall()
    assert audited == [("root", "broadcast.send", f"broadcast:{sent['id']}")]


async def test_active_broadcasts_are_listed_until_they_expire(servers: tuple[Server, Server]) -> None:
    first, second = servers
    admin, reader = sign("root", roles=["admin"]), sign("reader")
    async with httpx.AsyncClient(timeout=10) as client:
        short = (await broadcast(client, first, admin, message="Soon gone", ttl_s=1)).json()
        long = (await broadcast(client, first, admin, message="Critical", level="critical")).json()
        listed = (await client.get(second.url + "/api/broadcasts", headers=bearer(reader))).json()["broadcasts"]
        assert [b["id"] for b in listed][:2] == [long["id"], short["id"]]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            listed = (await client.get(second.url + "/api/broadcasts", headers=bearer(reader))).json()["broadcasts"]
            if short["id"] not in [b["id"] for b in listed]:
                break
            await asyncio.sleep(0.2)
        assert [b["id"] for b in listed] == [long["id"]]
        assert (await client.get(second.url + "/api/broadcasts")).status_code == 401
