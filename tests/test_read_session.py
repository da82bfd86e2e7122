"""`Database.read_session`: on PostgreSQL, reads outside any transaction (no `BEGIN` and
`ROLLBACK` round trips, issue 13), without leaving a pooled connection in autocommit for the
sessions that write. Against a real PostgreSQL (skipped when none is reachable) and SQLite."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.domain.models import User
from app.infra.db import Database


async def two_nows(session: AsyncSession) -> tuple[Any, Any]:
    """`now()` is the start of the current transaction: equal twice inside one, not across two."""
    first = (await session.exec(text("SELECT now()"))).scalar_one()  # type: ignore[call-overload]
    second = (await session.exec(text("SELECT now()"))).scalar_one()  # type: ignore[call-overload]
    return first, second


async def test_postgres_reads_need_no_transaction_and_writers_still_get_one(postgres_url: str) -> None:
    db = Database(postgres_url)
    try:
        async with db.read_session() as session:
            first, second = await two_nows(session)
        assert first != second  # each statement ran on its own: no BEGIN around them
        # The same pooled connection (the only one opened) is transactional again for writers.
        async with db.session() as session:
            first, second = await two_nows(session)
            assert first == second
            session.add(User(id="rolled-back", name="R"))
            await session.flush()
            await session.rollback()
        async with db.read_session() as session:
            assert await session.get(User, "rolled-back") is None
        assert db.engine.pool.checkedin() == 1  # type: ignore[attr-defined]
    finally:
        await db.close()


async def test_sqlite_read_session_reads_what_was_committed(sqlite_db: Database) -> None:
    async with sqlite_db.session() as session:
        session.add(User(id="alice", name="Alice"))
        await session.commit()
    async with sqlite_db.read_session() as session:
        found = await session.get(User, "alice")
    assert found is not None and found.name == "Alice"
