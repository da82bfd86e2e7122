"""Retention: what Parley stops keeping, and when.

- Notifications older than PARLEY_NOTIFICATION_RETENTION_DAYS (90) are deleted.
- A deleted response keeps its place in its thread (replies hang on it) but its words are
  erased PARLEY_DELETED_BODY_GRACE_DAYS (30) after its deletion: the grace period lets a
  moderator look at what was removed (the audit log says who removed it).

`RetentionSweeper.run` is a background task of every process (owned by `create_app`); sweeps
are idempotent, so several processes sweeping at once only repeat each other's no-ops. Work is
done in batches of `BATCH` rows, each its own short transaction, so a first sweep over years of
rows never holds a long lock; one sweep does at most `MAX_BATCHES`, the next goes on.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, update
from sqlmodel import col, select

from app.cancellation import stop_if_cancelled
from app.domain.models import Notification, Response, utcnow
from app.infra.db import Database
from app.settings import Settings

log = logging.getLogger(__name__)

BATCH = 500
MAX_BATCHES = 200


@dataclass(frozen=True)
class Swept:
    notifications: int
    bodies: int


async def prune_notifications(db: Database, older_than: datetime) -> int:
    removed = 0
    for _ in range(MAX_BATCHES):
        async with db.session() as session:
            ids = (
                await session.exec(
                    select(Notification.id).where(col(Notification.created_at) < older_than).limit(BATCH)
                )
            ).all()
            if not ids:
                break
            await session.exec(delete(Notification).where(col(Notification.id).in_(ids)))
            await session.commit()
        removed += len(ids)
        if len(ids) < BATCH:
            break
    return removed


async def purge_deleted_bodies(db: Database, deleted_before: datetime) -> int:
    purged = 0
    for _ in range(MAX_BATCHES):
        async with db.session() as session:
            ids = (
                await session.exec(
                    select(Response.id)
                    .where(col(Response.deleted), col(Response.deleted_at) < deleted_before, col(Response.body) != "")
                    .limit(BATCH)
                )
            ).all()
            if not ids:
                break
            await session.exec(update(Response).where(col(Response.id).in_(ids)).values(body=""))
            await session.commit()
        purged += len(ids)
        if len(ids) < BATCH:
            break
    return purged


async def sweep(db: Database, settings: Settings, now: datetime | None = None) -> Swept:
    now = now or utcnow()
    notifications = await prune_notifications(db, now - timedelta(days=settings.notification_retention_days))
    bodies = await purge_deleted_bodies(db, now - timedelta(days=settings.deleted_body_grace_days))
    if notifications or bodies:
        log.info("retention: deleted %d old notifications, erased %d deleted responses' words", notifications, bodies)
    return Swept(notifications, bodies)


class RetentionSweeper:
    def __init__(self, db: Database, settings: Settings) -> None:
        self._db = db
        self._settings = settings

    async def run(self) -> None:
        """Sweep now, then every `retention_interval_s`. Owned by the app; cancelled on shutdown."""
        while True:
            try:
                await sweep(self._db, self._settings)
            except Exception as error:
                stop_if_cancelled(error)
                # The database may be restarting: the next sweep retries.
                log.exception("retention: sweep failed; retrying in %.0fs", self._settings.retention_interval_s)
            await asyncio.sleep(self._settings.retention_interval_s)
