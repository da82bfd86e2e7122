"""Propositions, stances, the analysis document, broadcasts, roles and discussion listings
over REST, in-process (Quart's test client), on SQLite and on PostgreSQL.

Every refused request is checked to have stored nothing: the counts, the stored analysis and
the listings read afterwards are exactly what the accepted requests made.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlmodel import func, select

from app.core.services import Services
from app.domain.models import Analysis, Broadcast, Proposition, Response, Stance
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
    settings = Settings(
        database_url=database,
        jwt_secret=TEST_JWT_SECRET,
        dev_login=True,
        data_dir=tmp_path / ".parley",
        dev_roles=frozenset({"analyzer"}),
        # Every answer is checked against its route's declared contract (app/web/contract.py).
        check_responses=True,
        # The analysis worker would store versions of its own while these tests count what
        # requests stored: here it waits 10 minutes (tests/test_common_ground.py runs it).
        cg_debounce_ms=600_000,
    )
    quart_app = create_app(settings)
    async with quart_app.test_app() as test_app:
        yield test_app.app  # type: ignore[attr-defined]


@pytest.fixture
def client(app: Quart) -> Client:
    return app.test_client()


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


async def json_of(response: Any, status: int) -> Any:
    assert response.status_code == status, await response.get_data()
    return await response.get_json()


async def new_discussion(client: Client, token: str, **body: Any) -> str:
    r = await client.post("/api/discussions", json={"title": "Bike lanes", **body}, headers=bearer(token))
    return str((await json_of(r, 201))["id"])


async def new_proposition(client: Client, token: str, discussion: str, text: str) -> str:
    r = await client.post(f"/api/discussions/{discussion}/propositions", json={"text": text}, headers=bearer(token))
    return str((await json_of(r, 201))["id"])


async def respond(client: Client, token: str, discussion: str, stances: dict[str, str], status: int = 201) -> Any:
    r = await client.post(
        f"/api/discussions/{discussion}/responses",
        json={"body": "I think so", "stances": stances},
        headers=bearer(token),
    )
    return await json_of(r, status)


async def count_rows(app: Quart, model: Any, **where: str) -> int:
    """Rows of `model` matching `where` (the PostgreSQL database is shared by the session's tests)."""
    parley: Services = app.extensions["parley"]
    query = select(func.count()).select_from(model)
    for name, value in where.items():
        query = query.where(getattr(model, name) == value)
    async with parley.db.session() as session:
        return int((await session.exec(query)).one())


async def test_propositions_are_created_and_listed(client: Client) -> None:
    alice = sign(unique("alice"))
    discussion = await new_discussion(client, alice)
    r = await client.post(
        f"/api/discussions/{discussion}/propositions",
        json={"text": "  Bike lanes make streets safer "},
        headers=bearer(alice),
    )
    created = await json_of(r, 201)
    assert set(created) == {"id", "text", "discussion_id", "created_by", "created_at"}
    assert created["text"] == "Bike lanes make streets safer" and created["discussion_id"] == discussion
    r = await client.post(
        f"/api/discussions/{discussion}/propositions", json={"text": "nul\u0000byte"}, headers=bearer(alice)
    )
    assert r.status_code == 422  # PostgreSQL cannot store it: refused, not a 500
    second = await new_proposition(client, alice, discussion, "Parking matters more")
    listed = await json_of(await client.get(f"/api/discussions/{discussion}/propositions", headers=bearer(alice)), 200)
    assert [p["id"] for p in listed["propositions"]] == [created["id"], second]


async def test_analysis_before_any_computation_is_version_0_with_zero_counts(client: Client) -> None:
    alice = sign(unique("alice"))
    discussion = await new_discussion(client, alice)
    proposition = await new_proposition(client, alice, discussion, "Trees cool streets")
    document = await json_of(await client.get(f"/api/discussions/{discussion}/analysis", headers=bearer(alice)), 200)
    assert document["version"] == 0 and document["computed_at"] is None and document["participants"] == 0
    assert document["propositions"] == [
        {"id": proposition, "text": "Trees cool streets", "agree": 0, "disagree": 0, "pass": 0, "agreement": None}
    ]
    assert document["common_ground"] == [] and document["divisive"] == []


async def test_stances_ride_on_responses_and_bad_ones_store_nothing(app: Quart, client: Client) -> None:
    alice, bob = sign(unique("alice")), sign(unique("bob"))
    discussion = await new_discussion(client, alice)
    other = await new_discussion(client, alice)
    mine = await new_proposition(client, alice, discussion, "Shade matters")
    theirs = await new_proposition(client, alice, other, "Elsewhere")
    body = await respond(client, bob, discussion, {mine: "agree"})
    assert body["stances"] == {mine: "agree"}
    responses = await count_rows(app, Response, discussion_id=discussion)
    stances = await count_rows(app, Stance, discussion_id=discussion)

    # A proposition of another discussion, an unknown one, an unknown stance value: 422.
    for stances_sent in ({theirs: "agree"}, {"nope": "agree"}, {mine: "agree", theirs: "pass"}):
        error = await respond(client, bob, discussion, stances_sent, status=422)
        assert error["error"]["code"] == "unknown_proposition"
    error = await respond(client, bob, discussion, {mine: "maybe"}, status=422)
    assert error["error"]["code"] == "invalid_field"
    assert await count_rows(app, Response, discussion_id=discussion) == responses == 1
    assert await count_rows(app, Stance, discussion_id=discussion) == stances == 1


async def test_outsiders_get_404_and_roles_are_enforced(app: Quart, client: Client) -> None:
    alice, eve = sign(unique("alice")), sign(unique("eve"))
    analyzer = sign(unique("service"), roles=["analyzer"])
    admin_without_membership = sign(unique("root"), roles=["admin"])
    private = await new_discussion(client, alice, visibility="private")
    proposition = await new_proposition(client, alice, private, "Only members see this")
    for token in (eve, admin_without_membership):
        for method, path, body in (
            ("POST", "propositions", {"text": "hi"}),
            ("GET", "propositions", None),
            ("GET", "analysis", None),
        ):
            r = await client.open(f"/api/discussions/{private}/{path}", method=method, json=body, headers=bearer(token))
            assert r.status_code == 404, (method, path)
    # The analyzer role is needed to publish an analysis: 403 without it, even for the creator.
    document = {
        "participants": 1,
        "propositions": [{"id": proposition, "agree": 1, "disagree": 0, "pass": 0, "agreement": 1.0}],
        "common_ground": [],
        "divisive": [],
    }
    r = await client.post(f"/api/discussions/{private}/analysis", json=document, headers=bearer(alice))
    assert (await json_of(r, 403))["error"]["code"] == "role_required"
    # With the role but no access to the private discussion: 404, as everywhere.
    r = await client.post(f"/api/discussions/{private}/analysis", json=document, headers=bearer(analyzer))
    assert r.status_code == 404
    assert await count_rows(app, Analysis, discussion_id=private) == 0
    assert await count_rows(app, Proposition, discussion_id=private) == 1


async def test_external_analysis_is_validated_versioned_and_stored(app: Quart, client: Client) -> None:
    alice, analyzer = sign(unique("alice")), sign(unique("service"), roles=["analyzer"])
    discussion = await new_discussion(client, alice)
    elsewhere = await new_discussion(client, alice)
    a = await new_proposition(client, alice, discussion, "Shade matters")
    b = await new_proposition(client, alice, discussion, "Costs matter")
    stray = await new_proposition(client, alice, elsewhere, "Not here")

    def figures(pid: str, **extra: Any) -> dict[str, Any]:
        return {"id": pid, "agree": 4, "disagree": 1, "pass": 0, "agreement": 0.8, **extra}

    good = {"participants": 5, "propositions": [figures(a), figures(b)], "common_ground": [a], "divisive": [b]}
    bad_documents = [
        {**good, "participants": -1},
        {**good, "propositions": [figures(a, agreement=1.5)]},
        {**good, "propositions": [figures(stray)], "common_ground": [], "divisive": []},
        {**good, "common_ground": ["unknown"]},
        {**good, "common_ground": [a], "divisive": [a]},
        {**good, "propositions": [figures(a), figures(a)]},
        {**good, "common_groud": [a]},
        {key: value for key, value in good.items() if key != "divisive"},
    ]
    path = f"/api/discussions/{discussion}/analysis"
    for document in bad_documents:
        r = await client.post(path, json=document, headers=bearer(analyzer))
        assert r.status_code == 422, document
    assert await count_rows(app, Analysis, discussion_id=discussion) == 0

    stored = await json_of(await client.post(path, json=good, headers=bearer(analyzer)), 201)
    assert stored["version"] == 1 and stored["source"] == "external"
    assert [p["text"] for p in stored["propositions"]] == ["Shade matters", "Costs matter"]
    assert stored["common_ground"] == [a] and stored["new_common_ground"] == [a]
    again = await json_of(await client.post(path, json=stored, headers=bearer(analyzer)), 201)
    assert again["version"] == 2 and again["new_common_ground"] == []
    assert await json_of(await client.get(path, headers=bearer(alice)), 200) == again


async def test_broadcasts_need_admin_and_only_active_ones_are_listed(app: Quart, client: Client) -> None:
    root = unique("root")
    user, admin = sign(unique("user")), sign(root, roles=["admin"])
    r = await client.post("/api/broadcasts", json={"message": "Maintenance at noon"}, headers=bearer(user))
    assert (await json_of(r, 403))["error"]["code"] == "role_required"
    for bad in (
        {"message": ""},
        {"message": "x", "level": "loud"},
        {"message": "x", "ttl_s": 0},
        {"level": "info"},
        {"message": "nul\u0000"},
    ):
        r = await client.post("/api/broadcasts", json=bad, headers=bearer(admin))
        assert r.status_code == 422, bad
    assert await count_rows(app, Broadcast, created_by=root) == 0
    r = await client.post(
        "/api/broadcasts", json={"message": "Maintenance at noon", "level": "critical"}, headers=bearer(admin)
    )
    created = await json_of(r, 201)
    assert set(created) == {"id", "message", "level", "created_at", "expires_at"}
    assert created["level"] == "critical" and created["expires_at"] > created["created_at"]
    listed = await json_of(await client.get("/api/broadcasts", headers=bearer(user)), 200)
    assert created in listed["broadcasts"]


async def test_dev_login_grants_only_the_roles_allowed(client: Client) -> None:
    r = await client.post("/api/dev/login", json={"name": "mallory", "roles": ["admin"]})
    assert (await json_of(r, 403))["error"]["code"] == "role_not_allowed"
    # This app allows `analyzer` (PARLEY_DEV_ROLES=analyzer), so that one is granted.
    token = (await json_of(await client.post("/api/dev/login", json={"name": "svc", "roles": ["analyzer"]}), 200))[
        "token"
    ]
    discussion = await new_discussion(client, token)
    empty = {"participants": 0, "propositions": [], "common_ground": [], "divisive": []}
    r = await client.post(f"/api/discussions/{discussion}/analysis", json=empty, headers=bearer(token))
    assert (await json_of(r, 201))["version"] == 1


async def test_discussion_listings(client: Client) -> None:
    alice, bob, carol = sign(unique("alice")), sign(unique("bob")), sign(unique("carol"))
    older = await new_discussion(client, alice, title="Older")
    newer = await new_discussion(client, carol, title="Newer")
    private = await new_discussion(client, alice, visibility="private", members=[])
    # Bob responds to the older one (through the API, as any client would): it becomes his.
    await client.post(f"/api/discussions/{older}/responses", json={"body": "Hello"}, headers=bearer(bob))
    await client.post(f"/api/discussions/{older}/responses", json={"body": "Again"}, headers=bearer(alice))

    public = await json_of(await client.get("/api/discussions", headers=bearer(bob)), 200)
    ids = [d["id"] for d in public["discussions"]]
    assert private not in ids
    assert ids.index(older) < ids.index(newer)  # newest activity first: older got responses since
    first = public["discussions"][ids.index(older)]
    assert first["participant_count"] == 2 and first["last_activity_at"].endswith("Z")

    mine = await json_of(await client.get("/api/discussions?scope=mine", headers=bearer(bob)), 200)
    assert [d["id"] for d in mine["discussions"]] == [older]
    # A member of a private discussion finds it under theirs, though they never responded.
    carol_id = unique("carol")
    shared = await new_discussion(client, alice, visibility="private", members=[carol_id])
    carols = await json_of(await client.get("/api/discussions?scope=mine", headers=bearer(sign(carol_id))), 200)
    assert [d["id"] for d in carols["discussions"]] == [shared]
    assert shared not in [d["id"] for d in mine["discussions"]]
    alices = await json_of(await client.get("/api/discussions?scope=mine", headers=bearer(alice)), 200)
    assert {d["id"] for d in alices["discussions"]} == {older, private, shared}

    page = await json_of(await client.get(f"/api/discussions?limit=1&before={older}", headers=bearer(bob)), 200)
    assert [d["id"] for d in page["discussions"]] == [ids[ids.index(older) + 1]]
    for query in ("scope=everyone", "limit=0", "before=nope"):
        r = await client.get(f"/api/discussions?{query}", headers=bearer(bob))
        assert r.status_code == 422, query
