"""Transactional outbox: a stored change and its event are never separated.

Without it, a response was committed and *then* appended to the event log; when the append
failed (Redis down, a dead pooled connection) the caller got a 503, and its retry with the same
`client_id` found the stored response and fired nothing: no reader ever saw it. Now:

1. `stage` adds the event, as an `OutboxEntry` row, to the session of the change, so the row
   commits (or rolls back) with it. Nothing is appended yet.
2. After the commit, the request appends it at once (`relay`), so readers get it with no added
   delay, and leaves its row id to be deleted. If the append fails, the request still succeeds
   (the change is stored, the event is on its way) and the row stays.
3. `OutboxRelay`, a background task of every process (owned by `create_app`), first deletes the
   rows its requests appended, all in one statement (a post used to pay a second transaction
   of its own for that delete: issue 13), then appends the rows left behind (older than
   `RELAY_GRACE_S`, so it does not race the request's own attempt) in id order, and deletes
   them. On shutdown it deletes the appended rows once more before it stops.

Idempotent: every append carries the row's random `key` (`EventLog.append(dedupe_key=...)`),
which the log remembers for the retention window, so a row appended by the request and again
by a relay (its delete failed, or two processes' relays met on it) is in the log once.

Bounded: rows are deleted once appended (within `RELAY_INTERVAL_S`); a row older than the
retention window is dropped with a warning (its readers' cursors are past the window too: they
get `sync_required`). At most `MAX_APPENDED` appended ids wait for their delete; past that (the
database refusing deletes), an id is forgotten and its row is found, appended again (a no-op,
deduplicated) and deleted by a later pass.

Order: the relay appends in commit order; an event relayed late lands after events appended
directly in the meantime (an edit may then reach readers before the post it edits). Readers
key on the response id, so they cope; what they never get is a silent hole.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import weakref
from datetime import timedelta
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import delete
from sqlalchemy import insert as sa_insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.core.services import Services
from app.domain.models import OutboxEntry, utcnow
from app.infra.db import Database
from app.log.events import envelope_body

log = logging.getLogger(__name__)

RELAY_INTERVAL_S = 1.0
RELAY_GRACE_S = 2.0
RELAY_BATCH = 200
# Ids per DELETE statement (SQLite allows 32,766 parameters) and waiting at most.
DELETE_BATCH = 500
MAX_APPENDED = 100_000

_OUTBOX = OutboxEntry.__table__  # type: ignore[attr-defined]
# Built once, run with parameters (also compiled for the SQLite thread by app/api/posting.py).
ENTRY_COLUMNS = ("key", "topic", "event_type", "body", "created_at")
INSERT_ENTRY = sa_insert(_OUTBOX).returning(_OUTBOX.c.id)

# Per database: ids of rows their request appended, for the relay's next pass to delete.
_appended: weakref.WeakKeyDictionary[Database, list[int]] = weakref.WeakKeyDictionary()


def entry(
    topic: str,
    event_type: str,
    *,
    discussion_id: str | None,
    user: dict[str, str] | None,
    payload: dict[str, Any],
) -> OutboxEntry:
    """The event's row, not yet stored (`stage` or `insert` it)."""
    body = envelope_body(event_type, discussion_id=discussion_id, user=user, payload=payload)
    return OutboxEntry(key=secrets.token_hex(16), topic=topic, event_type=event_type, body=body.decode())


def stage(
    session: AsyncSession,
    topic: str,
    event_type: str,
    *,
    discussion_id: str | None,
    user: dict[str, str] | None,
    payload: dict[str, Any],
) -> OutboxEntry:
    """Add the event to the session's transaction; `relay` it after the commit."""
    staged = entry(topic, event_type, discussion_id=discussion_id, user=user, payload=payload)
    session.add(staged)
    return staged


def entry_row(unstored: OutboxEntry) -> dict[str, Any]:
    """`INSERT_ENTRY`'s parameters."""
    return {column: getattr(unstored, column) for column in ENTRY_COLUMNS}


async def relay(parley: Services, entry: OutboxEntry) -> None:
    """Append a committed entry now; its row is deleted by the relay's next pass. Never raises
    for the log being unreachable: the row stays, and `OutboxRelay` appends it later."""
    try:
        await _append(parley, entry)
    except (RedisError, OSError) as error:
        log.warning("outbox: could not append %s now (%s); the relay will", entry.event_type, error)
        return
    if entry.id is None:
        return
    waiting = _appended.setdefault(parley.db, [])
    if len(waiting) < MAX_APPENDED:
        waiting.append(entry.id)


async def _append(parley: Services, entry: OutboxEntry) -> None:
    await parley.log.append(entry.topic, entry.event_type, entry.body.encode(), dedupe_key=entry.key)
    parley.metrics.published.labels(type=entry.event_type).inc()


async def _delete(parley: Services, ids: list[int | None]) -> None:
    async with parley.db.session() as session:
        for start in range(0, len(ids), DELETE_BATCH):
            await session.exec(delete(OutboxEntry).where(col(OutboxEntry.id).in_(ids[start : start + DELETE_BATCH])))
        await session.commit()


async def delete_appended(parley: Services) -> int:
    """Delete the rows requests appended since the last pass, in one transaction. On failure
    the ids are kept for the next pass (bounded by MAX_APPENDED)."""
    waiting = _appended.get(parley.db)
    if not waiting:
        return 0
    ids: list[int | None] = list(waiting)
    waiting.clear()
    try:
        await _delete(parley, ids)
    except BaseException:
        room = MAX_APPENDED - len(waiting)
        waiting.extend(i for i in ids[:room] if i is not None)
        raise
    return len(ids)


class OutboxRelay:
    """Appends what requests left in the outbox. One per process; all share the table."""

    def __init__(self, parley: Services) -> None:
        self._parley = parley

    async def run(self) -> None:
        """Owned by the app; cancelled on shutdown (after deleting what its requests appended)."""
        try:
            while True:
                await asyncio.sleep(RELAY_INTERVAL_S)
                try:
                    while await self.relay_pending() == RELAY_BATCH:
                        pass
                except (RedisError, OSError) as error:
                    log.warning("outbox relay: %s; retrying in %.0fs", error, RELAY_INTERVAL_S)
                except Exception:
                    log.exception("outbox relay failed; retrying")
        except asyncio.CancelledError:
            # Rows left would be appended again after a restart: into the embedded log's new
            # epoch, as events readers already have (they dedupe by id, but need not see them).
            try:
                await delete_appended(self._parley)
            except Exception as error:
                log.warning("outbox: could not delete the appended entries before stopping: %s", error)
            raise

    async def relay_pending(self, grace_s: float = RELAY_GRACE_S) -> int:
        """Append the entries older than `grace_s`, oldest first, then delete them; returns how
        many it took. Stops at the first append that fails: the rest wait, in order."""
        parley = self._parley
        await delete_appended(parley)  # before the read: those rows need no second append
        now = utcnow()
        async with parley.db.session() as session:
            rows = await session.exec(
                select(OutboxEntry)
                .where(col(OutboxEntry.created_at) < now - timedelta(seconds=grace_s))
                .order_by(col(OutboxEntry.id))
                .limit(RELAY_BATCH)
            )
            entries = list(rows.all())
        done: list[int | None] = []
        too_old = now - timedelta(seconds=parley.settings.retention_s)
        try:
            for entry in entries:
                if entry.created_at < too_old:
                    log.warning(
                        "outbox: dropping %s entry %s older than the retention window", entry.event_type, entry.id
                    )
                else:
                    await _append(parley, entry)
                done.append(entry.id)
        finally:
            if done:
                await _delete(parley, done)
        return len(entries)
