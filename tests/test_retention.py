"""Retention: old notifications are deleted, deleted responses' words erased after the grace
period; by the sweeper a real server runs, and in batches."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlmodel import col, select

from app.domain import retention
from app.domain.models import Notification, Response, User, utcnow
from app.infra.db import Database
from app.settings import Settings

from .support import Server, bearer, sign
from .test_stream import make_discussion, post

pytestmark = pytest.mark.slow


def old_notification(user_id: str, age_days: float) -> Notification:
    return Notification(
        id=secrets.token_hex(16),
        user_id=user_id,
        type="reply",
        source_event=f"0-{secrets.randbelow(10**12)}",
        created_at=utcnow() - timedelta(days=age_days),
    )


async def test_the_server_prunes_old_notifications_and_erases_deleted_words_after_the_grace(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = start_server(
        PARLEY_RETENTION_INTERVAL_S="0.2", PARLEY_NOTIFICATION_RETENTION_DAYS="90", PARLEY_DELETED_BODY_GRACE_DAYS="30"
    )
    alice = sign("alice")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        discussion = await make_discussion(client, server, alice)
        long_ago = await post(client, server, alice, discussion, "deleted long ago")
        lately = await post(client, server, alice, discussion, "deleted lately")
        kept = await post(client, server, alice, discussion, "never deleted")
        for response in (long_ago, lately):
            r = await client.delete(f"/api/responses/{response['id']}", headers=bearer(alice))
            assert r.status_code == 200
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}")
    try:
        async with db.session() as session:
            stale, fresh = old_notification("alice", 91), old_notification("alice", 89)
            session.add_all([stale, fresh])
            row = await session.get(Response, int(long_ago["id"]))
            assert row is not None and row.body == "deleted long ago"  # kept while in its grace period
            row.deleted_at = utcnow() - timedelta(days=31)
            session.add(row)
            await session.commit()
        async with asyncio.timeout(15):
            while True:
                async with db.session() as session:
                    ids = set((await session.exec(select(Notification.id))).all())
                    bodies = {
                        str(r.id): r.body
                        for r in (await session.exec(select(Response).where(col(Response.discussion_id) == discussion)))
                    }
                if stale.id not in ids and bodies[long_ago["id"]] == "":
                    break
                await asyncio.sleep(0.1)
        assert fresh.id in ids
        assert bodies == {long_ago["id"]: "", lately["id"]: "deleted lately", kept["id"]: "never deleted"}
    finally:
        await db.close()


async def test_a_sweep_works_through_more_rows_than_one_batch(sqlite_db: Database) -> None:
    async with sqlite_db.session() as session:
        session.add(User(id="u", name="u"))
        session.add_all([old_notification("u", 200) for _ in range(retention.BATCH * 2 + 7)])
        session.add_all([old_notification("u", 1) for _ in range(3)])
        await session.commit()
    swept = await retention.sweep(sqlite_db, Settings())
    assert swept.notifications == retention.BATCH * 2 + 7
    assert (await retention.sweep(sqlite_db, Settings())).notifications == 0
    async with sqlite_db.session() as session:
        assert len((await session.exec(select(Notification.id))).all()) == 3
