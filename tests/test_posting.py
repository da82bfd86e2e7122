"""`app.api.posting.store` on both databases (on SQLite: one trip to the SQLite thread): the
response, its discussion's last activity, its stances and its event are stored together; a
repeated `client_id` stores none of them. And on SQLite, the one-trip path writes the very same
column values as the session path it replaced."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlmodel import select

from app.api import posting
from app.auth import Identity
from app.domain.models import Discussion, OutboxEntry, Proposition, Response, Stance, User, utcnow
from app.infra.db import Database


async def _discussion_with_proposition(db: Database, discussion_id: str, created: datetime | None = None) -> str:
    created = created or utcnow() - timedelta(days=1)
    proposition_id = f"p{discussion_id}"[-32:]
    async with db.session() as session:
        if await session.get(User, "posting-author") is None:
            session.add(User(id="posting-author", name="Author"))
            await session.flush()
        session.add(
            Discussion(
                id=discussion_id, title="T", created_by="posting-author", created_at=created, last_activity_at=created
            )
        )
        await session.flush()
        session.add(
            Proposition(id=proposition_id, discussion_id=discussion_id, text="We agree", created_by="posting-author")
        )
        await session.commit()
    return proposition_id


def _new(discussion_id: str, body: str, client_id: str, stances: dict[str, str] | None) -> Response:
    return Response(
        discussion_id=discussion_id, author_id="posting-author", body=body, stances=stances, client_id=client_id
    )


AUTHOR = Identity(user_id="posting-author", name="Author", roles=frozenset(), expires_at=float("inf"))


async def test_a_post_is_stored_with_its_stances_and_event_and_a_repeat_stores_nothing(
    db: Database, tmp_path: Path
) -> None:
    discussion_id = f"d-{tmp_path.name}"[-60:]  # one PostgreSQL database is shared by the tests
    proposition_id = await _discussion_with_proposition(db, discussion_id)
    posted = _new(discussion_id, "hello", discussion_id, {proposition_id: "agree"})

    stored = await posting.store(db, AUTHOR, posted, {proposition_id: "agree"})

    assert stored is not None and posted.id is not None
    assert stored.body["id"] == str(posted.id) and stored.body["stances"] == {proposition_id: "agree"}
    assert stored.event.id is not None and stored.event.event_type == "response_posted"
    assert json.loads(stored.event.body)["payload"]["response"] == stored.body
    async with db.session() as session:
        response = await session.get(Response, posted.id)
        discussion = await session.get(Discussion, discussion_id)
        event = await session.get(OutboxEntry, stored.event.id)
        stances = (await session.exec(select(Stance).where(Stance.discussion_id == discussion_id))).all()
    assert response is not None and response.body == "hello" and response.created_at == posted.created_at
    assert response.stances == {proposition_id: "agree"} and response.deleted is False
    assert discussion is not None and discussion.last_activity_at == posted.created_at
    assert discussion.title == "T" and discussion.created_at < posted.created_at  # nothing else of it moved
    assert event is not None and event.body == stored.event.body and event.key == stored.event.key
    assert [(s.proposition_id, s.stance, s.response_id) for s in stances] == [(proposition_id, "agree", posted.id)]

    again = _new(discussion_id, "again", discussion_id, {proposition_id: "disagree"})
    again.created_at = posted.created_at + timedelta(hours=1)
    assert await posting.store(db, AUTHOR, again, {proposition_id: "disagree"}) is None
    async with db.session() as session:
        discussion = await session.get(Discussion, discussion_id)
        bodies = (await session.exec(select(Response.body).where(Response.discussion_id == discussion_id))).all()
        events = (await session.exec(select(OutboxEntry.id).where(OutboxEntry.body.contains(discussion_id)))).all()  # type: ignore[attr-defined]
        stance = (await session.exec(select(Stance.stance).where(Stance.discussion_id == discussion_id))).one()
    assert discussion is not None and discussion.last_activity_at == posted.created_at
    assert list(bodies) == ["hello"] and list(events) == [stored.event.id] and stance == "agree"


async def _raw_rows(db: Database, discussion_id: str) -> list[dict[str, Any]]:
    """The stored column values as SQLite holds them (text, integers), not as the ORM reads them."""
    async with db.engine.connect() as connection:
        rows: list[dict[str, Any]] = []
        for table, where in (
            ("responses", "discussion_id = :d"),
            ("stances", "discussion_id = :d"),
            ("discussions", "id = :d"),
        ):
            result = await connection.execute(
                sqlalchemy.text(f"SELECT * FROM {table} WHERE {where}"), {"d": discussion_id}
            )
            rows += [{"table": table, **row._asdict()} for row in result]
    return rows


async def test_on_sqlite_one_trip_stores_what_the_session_stores(sqlite_db: Database) -> None:
    assert sqlite_db.one_trip
    created = utcnow().replace(microsecond=123456)
    stored: dict[bool, list[dict[str, Any]]] = {}
    for one_trip in (True, False):
        sqlite_db.one_trip = one_trip
        discussion_id = f"d-{one_trip}"
        proposition_id = await _discussion_with_proposition(sqlite_db, discussion_id, created - timedelta(days=1))
        for n, stances in enumerate(({proposition_id: "pass"}, None)):
            post = _new(discussion_id, f"body {n}", f"c{n}-{one_trip}", stances)
            post.created_at = created + timedelta(seconds=n)
            assert await posting.store(sqlite_db, AUTHOR, post, stances or {}) is not None
        rows = await _raw_rows(sqlite_db, discussion_id)
        # Ids and names differ by construction (and a stance's update time); no other value may.
        stored[one_trip] = [
            {
                key: str(value).replace(proposition_id, "P").replace(f"-{one_trip}", "")
                for key, value in row.items()
                if key not in {"id", "response_id", "updated_at"}
            }
            for row in rows
        ]
    assert stored[True] == stored[False]
    responses = [row for row in stored[True] if row["table"] == "responses"]
    assert [(row["stances"], row["deleted"]) for row in responses] == [('{"P": "pass"}', "0"), ("null", "0")]
    assert responses[0]["created_at"] == str(created).replace("+00:00", "")
