"""A user's own data: export (`GET /api/me/export`) and account deletion (`DELETE /api/me`),
against a real server process and its SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.domain.users import DELETED_USER_ID

from .support import Server, bearer, sign
from .test_stream import make_discussion, post

pytestmark = pytest.mark.slow


async def notifications_of(client: httpx.AsyncClient, token: str, count: int) -> list[dict[str, Any]]:
    async with asyncio.timeout(15):
        while True:
            r = await client.get("/api/notifications", headers=bearer(token))
            assert r.status_code == 200, r.text
            if len(r.json()) >= count:
                return list(r.json())
            await asyncio.sleep(0.1)


async def reply(client: httpx.AsyncClient, token: str, discussion: str, parent: str, body: str) -> dict[str, Any]:
    r = await client.post(
        f"/api/discussions/{discussion}/responses", json={"body": body, "parent_id": parent}, headers=bearer(token)
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def rows(database: Path, sql: str, *args: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(database) as db:
        return db.execute(sql, args).fetchall()


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    return start_server()


async def test_a_user_exports_their_data(server: Server) -> None:
    alice, bob = sign("alice", "Alice"), sign("bob")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        discussion = await make_discussion(client, server, alice)
        mine = await post(client, server, alice, discussion, "my words")
        assert (await client.put(f"/api/discussions/{discussion}/follow", headers=bearer(alice))).status_code == 200
        r = await client.put("/api/notification-preferences", json={"followed": True}, headers=bearer(alice))
        assert r.status_code == 200
        await reply(client, bob, discussion, mine["id"], "bob's reply")
        await notifications_of(client, alice, 1)
        r = await client.get("/api/me/export", headers=bearer(alice))
        assert r.status_code == 200
        data = r.json()
        assert (await client.get("/api/me/export")).status_code == 401
    assert data["profile"]["id"] == "alice" and data["profile"]["name"] == "Alice"
    assert [(x["id"], x["body"]) for x in data["responses"]] == [(mine["id"], "my words")]  # not bob's
    assert [f["discussion_id"] for f in data["follows"]] == [discussion]
    assert [n["type"] for n in data["notifications"]] == ["reply"]
    assert data["preferences"]["followed"] is True
    assert data["push_subscriptions"] == [] and data["truncated"] == []


async def test_a_deleted_account_leaves_its_responses_to_a_deleted_user_and_nothing_else(
    server: Server, tmp_path: Path
) -> None:
    database = tmp_path / "parley.db"
    alice, bob = sign("alice", "Alice"), sign("bob")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        discussion = await make_discussion(client, server, alice)
        r = await client.post(
            f"/api/discussions/{discussion}/propositions", json={"text": "Trees cool streets"}, headers=bearer(alice)
        )
        assert r.status_code == 201, r.text
        proposition = r.json()["id"]
        r = await client.post(
            f"/api/discussions/{discussion}/responses",
            json={"body": "my words", "stances": {proposition: "agree"}},
            headers=bearer(alice),
        )
        assert r.status_code == 201, r.text
        mine = r.json()
        await client.put(f"/api/discussions/{discussion}/follow", headers=bearer(alice))
        await client.put("/api/notification-preferences", json={"followed": True}, headers=bearer(alice))
        bobs = await reply(client, bob, discussion, mine["id"], "bob's reply")
        await notifications_of(client, alice, 1)
        await reply(client, alice, discussion, bobs["id"], "alice answers")
        [bob_notified] = await notifications_of(client, bob, 1)
        assert bob_notified["actor"]["id"] == "alice"

        r = await client.delete("/api/me", headers=bearer(alice))
        assert r.status_code == 204
        # Nothing of alice's own is left (read before her token makes another request).
        for table, column in (
            ("users", "id"),
            ("follows", "user_id"),
            ("notifications", "user_id"),
            ("notification_preferences", "user_id"),
            ("push_subscriptions", "user_id"),
            ("responses", "author_id"),
            ("discussions", "created_by"),
            ("notifications", "actor_id"),
            ("propositions", "created_by"),
            ("stances", "user_id"),
        ):
            assert rows(database, f"SELECT count(*) FROM {table} WHERE {column} = ?", "alice") == [(0,)], table

        # Her proposition stays, and her stance still counts, under a name that is not hers.
        assert rows(database, "SELECT created_by FROM propositions WHERE id = ?", proposition) == [(DELETED_USER_ID,)]
        [(anonymous,)] = rows(database, "SELECT user_id FROM stances WHERE proposition_id = ?", proposition)
        assert anonymous.startswith("deleted:")
        # The thread keeps its shape; her words stay, as the deleted user's; bob's are his.
        r = await client.get(f"/api/discussions/{discussion}/responses", headers=bearer(bob))
        by_id = {x["id"]: x for x in r.json()["responses"]}
        assert by_id[mine["id"]]["author"] == {"id": DELETED_USER_ID, "name": "deleted user"}
        assert by_id[mine["id"]]["body"] == "my words"
        assert by_id[bobs["id"]]["author"]["id"] == "bob"
        [still] = await notifications_of(client, bob, 1)
        assert still["actor"] == {"id": DELETED_USER_ID, "name": "deleted user"}

        # Her token, still valid at the issuer, signs in as a new, empty account.
        data = (await client.get("/api/me/export", headers=bearer(alice))).json()
        assert (data["responses"], data["follows"], data["notifications"]) == ([], [], [])
        # The deleted user cannot be signed in as.
        r = await client.get("/api/me/export", headers=bearer(sign(DELETED_USER_ID, "impostor")))
        assert r.status_code == 403
        r = await client.get(f"/api/discussions/{discussion}/responses", headers=bearer(bob))
        assert r.json()["responses"][0]["author"]["name"] == "deleted user"
    assert rows(database, "SELECT actor_id, action, target FROM audit_log WHERE action = 'account.delete'") == [
        ("alice", "account.delete", "user:alice")
    ]
