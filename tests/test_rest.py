"""The REST API in-process (Quart's test client), on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from app.main import create_app
from app.settings import Settings

from .support import TEST_JWT_SECRET, bearer, sign


@pytest.fixture(params=["sqlite", "postgres"])
async def app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Quart]:
    database = (
        f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    # check_responses: every answer in these tests is also checked against its declared contract.
    settings = Settings(
        database_url=database,
        jwt_secret=TEST_JWT_SECRET,
        dev_login=True,
        data_dir=tmp_path / ".parley",
        check_responses=True,
    )
    quart_app = create_app(settings)
    async with quart_app.test_app() as test_app:
        yield test_app.app  # type: ignore[attr-defined]


@pytest.fixture
def client(app: Quart) -> Client:
    return app.test_client()


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


async def new_discussion(client: Client, token: str, **body: Any) -> dict[str, Any]:
    r = await client.post("/api/discussions", json={"title": "Trees", **body}, headers=bearer(token))
    assert r.status_code == 201, await r.get_data()
    return dict(await r.get_json())


async def error_code(response: Any) -> str:
    return str((await response.get_json())["error"]["code"])


async def test_discussion_lifecycle(client: Client) -> None:
    alice, bob = sign(unique("alice"), "Alice"), sign(unique("bob"), "Bob")
    discussion = await new_discussion(client, alice)
    assert discussion["visibility"] == "public"
    assert discussion["created_at"].endswith("Z")
    path = f"/api/discussions/{discussion['id']}/responses"
    r = await client.post(path, json={"body": "First"}, headers=bearer(alice))
    assert r.status_code == 201
    first = await r.get_json()
    assert first["author"]["name"] == "Alice"
    r = await client.post(path, json={"body": "Reply", "parent_id": first["id"]}, headers=bearer(bob))
    reply = await r.get_json()
    assert reply["parent_id"] == first["id"]
    r = await client.get(path, headers=bearer(bob))
    listing = await r.get_json()
    assert [x["body"] for x in listing["responses"]] == ["First", "Reply"]
    assert "." in listing["cursor"]
    r = await client.get(path, query_string={"after": first["id"], "limit": "1"}, headers=bearer(bob))
    assert [x["id"] for x in (await r.get_json())["responses"]] == [reply["id"]]
    r = await client.get(f"/api/discussions/{discussion['id']}", headers=bearer(bob))
    # Who is connected now (FR-033, the presence store), not who ever wrote: nobody streams here.
    assert (await r.get_json())["participant_count"] == 0

    # Editing: the author only. Deleting: the author or the discussion's creator.
    r = await client.patch(f"/api/responses/{reply['id']}", json={"body": "Edited"}, headers=bearer(alice))
    assert r.status_code == 403
    r = await client.patch(f"/api/responses/{reply['id']}", json={"body": "Edited"}, headers=bearer(bob))
    assert r.status_code == 200
    assert (await r.get_json())["edited_at"] is not None
    r = await client.delete(f"/api/responses/{reply['id']}", headers=bearer(alice))
    assert r.status_code == 200
    deleted = await r.get_json()
    assert deleted["deleted"] is True
    assert deleted["body"] == ""
    r = await client.patch(f"/api/responses/{reply['id']}", json={"body": "Again"}, headers=bearer(bob))
    assert r.status_code == 409


async def test_client_id_makes_posting_idempotent(client: Client, app: Quart) -> None:
    alice = sign(unique("alice"))
    discussion = await new_discussion(client, alice)
    path = f"/api/discussions/{discussion['id']}/responses"
    metrics = app.extensions["parley"].metrics
    before = metrics.published.labels(type="response_posted")._value.get()
    first = await client.post(path, json={"body": "Once", "client_id": "c-1"}, headers=bearer(alice))
    again = await client.post(path, json={"body": "Once", "client_id": "c-1"}, headers=bearer(alice))
    assert (first.status_code, again.status_code) == (201, 200)
    assert (await first.get_json())["id"] == (await again.get_json())["id"]
    concurrent = await asyncio.gather(
        *(client.post(path, json={"body": "Race", "client_id": "c-2"}, headers=bearer(alice)) for _ in range(5))
    )
    assert sorted(r.status_code for r in concurrent) == [200, 200, 200, 200, 201]
    assert len({(await r.get_json())["id"] for r in concurrent}) == 1
    after = metrics.published.labels(type="response_posted")._value.get()
    assert after - before == 2  # one event per distinct response, none for the retries
    listing = await (await client.get(path, headers=bearer(alice))).get_json()
    assert [x["body"] for x in listing["responses"]] == ["Once", "Race"]


async def test_private_discussions_do_not_leak(client: Client) -> None:
    alice, bob, carol = sign(unique("alice")), sign(unique("bob")), sign("carol-member")
    private = await new_discussion(client, alice, visibility="private", members=["carol-member"])
    for path in (f"/api/discussions/{private['id']}", f"/api/discussions/{private['id']}/responses"):
        r = await client.get(path, headers=bearer(bob))
        assert r.status_code == 404
        assert await error_code(r) == "not_found"
        assert (await client.get(path, headers=bearer(carol))).status_code == 200
    r = await client.post(f"/api/discussions/{private['id']}/responses", json={"body": "x"}, headers=bearer(bob))
    assert r.status_code == 404
    r = await client.put(f"/api/discussions/{private['id']}/follow", headers=bearer(bob))
    assert r.status_code == 404


async def test_bad_input_is_refused_and_nothing_is_stored(client: Client) -> None:
    alice = sign(unique("alice"))
    discussion = await new_discussion(client, alice)
    path = f"/api/discussions/{discussion['id']}/responses"
    headers = {**bearer(alice), "Content-Type": "application/json"}
    cases: list[tuple[Any, int, str]] = [
        (b"{not json", 400, "malformed_json"),
        (b"[1, 2]", 400, "malformed_json"),
        (b"", 400, "malformed_json"),
        (b'{"body": 5}', 422, "invalid_field"),
        (b'{"body": "   "}', 422, "invalid_field"),
        (b'{"body": "x", "parent_id": "999999"}', 422, "invalid_field"),
        (b'{"body": "x", "parent_id": "abc"}', 422, "invalid_field"),
        (b'{"body": "x", "stances": {"p1": "maybe"}}', 422, "invalid_field"),
        (b'{"body": "' + b"x" * 10_001 + b'"}', 422, "invalid_field"),
        (b'{"body": "' + b"x" * 70_000 + b'"}', 413, "payload_too_large"),
    ]
    for raw, status, code in cases:
        r = await client.post(path, data=raw, headers=headers)
        assert r.status_code == status, (raw[:40], await r.get_data())
        assert await error_code(r) == code, raw[:40]
    r = await client.post("/api/discussions", json={"title": ""}, headers=bearer(alice))
    assert r.status_code == 422
    r = await client.post("/api/discussions", json={"title": "x", "visibility": "secret"}, headers=bearer(alice))
    assert r.status_code == 422
    r = await client.get(path, query_string={"limit": "5000"}, headers=bearer(alice))
    assert r.status_code == 422
    r = await client.get("/api/discussions/unknown", headers=bearer(alice))
    assert r.status_code == 404
    r = await client.patch("/api/responses/notanumber", json={"body": "x"}, headers=bearer(alice))
    assert r.status_code == 404
    r = await client.get("/no/such/route")
    assert r.status_code == 404 and await error_code(r) == "not_found"
    listing = await (await client.get(path, headers=bearer(alice))).get_json()
    assert listing["responses"] == []


async def test_follows_count_unread_responses(client: Client) -> None:
    alice, bob = sign(unique("alice")), sign(unique("bob"))
    discussion = await new_discussion(client, alice)
    path = f"/api/discussions/{discussion['id']}/responses"
    await client.post(path, json={"body": "before following"}, headers=bearer(alice))
    assert (await client.put(f"/api/discussions/{discussion['id']}/follow", headers=bearer(bob))).status_code == 200
    assert (await client.put(f"/api/discussions/{discussion['id']}/follow", headers=bearer(bob))).status_code == 200
    for i in range(3):
        await client.post(path, json={"body": f"new {i}"}, headers=bearer(alice))
    await client.post(path, json={"body": "mine"}, headers=bearer(bob))
    [follow] = await (await client.get("/api/me/follows", headers=bearer(bob))).get_json()
    assert follow["unread_count"] == 3
    assert follow["title"] == "Trees"
    await client.get(path, headers=bearer(bob))  # reading the thread marks it read
    [follow] = await (await client.get("/api/me/follows", headers=bearer(bob))).get_json()
    assert follow["unread_count"] == 0
    await client.delete(f"/api/discussions/{discussion['id']}/follow", headers=bearer(bob))
    assert await (await client.get("/api/me/follows", headers=bearer(bob))).get_json() == []
