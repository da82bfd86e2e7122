"""Transactional outbox: a stored change and its event are never separated.

Without it, a response was committed and *then* appended to the event log; when the append
failed (Redis down, a dead pooled connection) the caller got a 503, and its retry with the same
`client_id` found the stored response and fired nothing: no reader ever saw it. Now:

1. `stage` adds the event, as an `OutboxEntry` row, to the session of the change, so the row
   commits (or rolls back) with it. Nothing is appended yet.
2. After the commit, the request appends it at once (`relay`) and deletes the row, so readers
   get it with no added delay. If the append fails, the request still succeeds (the change is
   stored, the event is on its way) and the row stays.
3. `OutboxRelay`, a background task of every process (owned by `create_app`), appends the rows
   left behind (older than `RELAY_GRACE_S`, so it does not race the request's own attempt) in
   id order, and deletes them.

Idempotent: every append carries the row's random `key` (`EventLog.append(dedupe_key=...)`),
which the log remembers for the retention window, so a row appended by the request and again
by a relay (its delete failed, or two processes' relays met on it) is in the log once.

Bounded: rows are deleted once appended; a row older than the retention window is dropped
with a warning (its readers' cursors are past the window too: they get `sync_required`).

Order: the relay appends in commit order; an event relayed late lands after events appended
directly in the meantime (an edit may then reach readers before the post it edits). Readers
key on the response id, so they cope; what they never get is a silent hole.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import timedelta
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import delete
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.core.services import Services
from app.domain.models import OutboxEntry, utcnow
from app.log.events import envelope_body

log = logging.getLogger(__name__)

RELAY_INTERVAL_S = 1.0
RELAY_GRACE_S = 2.0
RELAY_BATCH = 200


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
    body = envelope_body(event_type, discussion_id=discussion_id, user=user, payload=payload)
    entry = OutboxEntry(key=secrets.token_hex(16), topic=topic, event_type=event_type, body=body.decode())
    session.add(entry)
    return entry


async def relay(parley: Services, entry: OutboxEntry) -> None:
    """Append a committed entry now and delete its row. Never raises for the log or the
    database being unreachable: the row stays, and `OutboxRelay` appends it later."""
    try:
        await _append(parley, entry)
    except (RedisError, OSError) as error:
        log.warning("outbox: could not append %s now (%s); the relay will", entry.event_type, error)
        return
    try:
        await _delete(parley, [entry.id])
    except Exception as error:  # appended: a relay finds the row, and the log dedupes it
        log.warning("outbox: appended but could not delete entry %s: %s", entry.id, error)


async def _append(parley: Services, entry: OutboxEntry) -> None:
    await parley.log.append(entry.topic, entry.event_type, entry.body.encode(), dedupe_key=entry.key)
    parley.metrics.published.labels(type=entry.event_type).inc()


async def _delete(parley: Services, ids: list[int | None]) -> None:
    async with parley.db.session() as session:
        await session.exec(delete(OutboxEntry).where(col(OutboxEntry.id).in_(ids)))
        await session.commit()


class OutboxRelay:
    """Appends what requests left in the outbox. One per process; all share the table."""

    def __init__(self, parley: Services) -> None:
        self._parley = parley

    async def run(self) -> None:
        """Owned by the app; cancelled on shutdown."""
        while True:
            await asyncio.sleep(RELAY_INTERVAL_S)
            try:
                while await self.relay_pending() == RELAY_BATCH:
                    pass
            except (RedisError, OSError) as error:
                log.warning("outbox relay: %s; retrying in %.0fs", error, RELAY_INTERVAL_S)
            except Exception:
                log.exception("outbox relay failed; retrying")

    async def relay_pending(self, grace_s: float = RELAY_GRACE_S) -> int:
        """Append the entries older than `grace_s`, oldest first, then delete them; returns how
        many it took. Stops at the first append that fails: the rest wait, in order."""
        parley = self._parley
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
