"""`domain.responses.insert` on both databases: the response gets its id, the discussion's
`last_activity_at` (and nothing else of it) moves to the response, and a repeated `client_id`
changes nothing (issue 13: the Core statements that replaced the unit of work)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from app.domain import responses
from app.domain.models import Discussion, Response, User, utcnow
from app.infra.db import Database


async def test_insert_sets_the_id_and_moves_only_last_activity(db: Database, tmp_path: Path) -> None:
    discussion_id = f"d-{tmp_path.name}"[-60:]  # one database is shared by the PostgreSQL tests
    created = utcnow() - timedelta(days=1)
    async with db.session() as session:
        if await session.get(User, "insert-author") is None:
            session.add(User(id="insert-author", name="Author"))
            await session.flush()
        session.add(
            Discussion(
                id=discussion_id, title="T", created_by="insert-author", created_at=created, last_activity_at=created
            )
        )
        await session.commit()
    posted = Response(discussion_id=discussion_id, author_id="insert-author", body="hello", client_id=discussion_id)
    async with db.session() as session:
        await responses.insert(session, posted)
        await session.commit()
    assert posted.id is not None
    async with db.session() as session:
        stored = await session.get(Response, posted.id)
        discussion = await session.get(Discussion, discussion_id)
    assert stored is not None and stored.body == "hello" and stored.discussion_id == discussion_id
    assert discussion is not None
    assert discussion.last_activity_at == posted.created_at
    assert discussion.created_at == created and discussion.title == "T"

    again = Response(discussion_id=discussion_id, author_id="insert-author", body="again", client_id=discussion_id)
    again.created_at = posted.created_at + timedelta(hours=1)
    async with db.session() as session:
        with pytest.raises(IntegrityError):
            await responses.insert(session, again)
        await session.rollback()
    async with db.session() as session:
        discussion = await session.get(Discussion, discussion_id)
    assert discussion is not None and discussion.last_activity_at == posted.created_at
