"""The notification worker's queries: each reads (or writes) what a whole batch of journal
events needs in one statement, so a batch costs a fixed number of queries, not some per event.

Idempotent storage: `insert_new` is one bulk INSERT that skips rows whose (source event,
recipient, type) is already stored (the unique constraint), so a batch handled twice (after a
crash or a lost lease) finds its rows instead of making new ones; `undelivered` then returns
what of the batch is still to be published or pushed, whether this run or an earlier one
stored it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select, update

from app.domain.access import readers_in
from app.domain.follows import unread_counts
from app.domain.models import (
    Discussion,
    Follow,
    Notification,
    NotificationPreferences,
    PushSubscription,
    Response,
    User,
)
from app.domain.preferences import preferences_of
from app.infra.db import Database


@dataclass
class Facts:
    """Who could be concerned by a batch (`gather`): read before deciding who is notified."""

    discussions: dict[str, Discussion] = field(default_factory=dict)
    followers: dict[str, list[str]] = field(default_factory=dict)  # discussion id -> user ids
    parent_authors: dict[int, str] = field(default_factory=dict)  # response id -> author id
    named: dict[str, list[str]] = field(default_factory=dict)  # lower-case name -> user ids
    # Discussion id -> the users named in it who may read it (the domain's one read rule).
    readers: dict[str, set[str]] = field(default_factory=dict)


@dataclass
class Recipients:
    """What is known of the users a batch may notify (`about`)."""

    preferences: dict[str, dict[str, bool]] = field(default_factory=dict)  # users with a row
    subscribed: set[str] = field(default_factory=set)  # users with a Web Push subscription
    unread_activity: set[tuple[str, str]] = field(default_factory=set)  # (user id, discussion id)


async def gather(
    db: Database, discussion_ids: Collection[str], parent_ids: Collection[int], names: Mapping[str, Collection[str]]
) -> Facts:
    """`names`: discussion id -> the lower-case names mentioned in it."""
    facts = Facts()
    if not discussion_ids:
        return facts
    async with db.session() as session:
        rows = await session.exec(select(Discussion).where(col(Discussion.id).in_(discussion_ids)))
        facts.discussions = {discussion.id: discussion for discussion in rows.all()}
        follows = await session.exec(
            select(Follow.discussion_id, Follow.user_id).where(col(Follow.discussion_id).in_(discussion_ids))
        )
        for discussion_id, user_id in follows.all():
            facts.followers.setdefault(discussion_id, []).append(user_id)
        if parent_ids:
            parents = await session.exec(
                select(Response.id, Response.author_id).where(col(Response.id).in_(parent_ids))
            )
            facts.parent_authors = {int(response_id or 0): author for response_id, author in parents.all()}
        all_names = {name for named in names.values() for name in named}
        if all_names:
            users = await session.exec(
                select(User.id, func.lower(User.name)).where(func.lower(User.name).in_(all_names))
            )
            for user_id, name in users.all():
                facts.named.setdefault(name, []).append(user_id)
        asked = [
            (discussion, [u for name in names.get(discussion.id, ()) for u in facts.named.get(name, [])])
            for discussion in facts.discussions.values()
        ]
        readers = await readers_in(session, [(d, candidates) for d, candidates in asked if candidates])
        facts.readers = {discussion_id: set(ids) for discussion_id, ids in readers.items()}
    return facts


async def about(db: Database, user_ids: Collection[str], discussion_ids: Collection[str]) -> Recipients:
    known = Recipients()
    if not user_ids:
        return known
    async with db.session() as session:
        rows = await session.exec(
            select(NotificationPreferences).where(col(NotificationPreferences.user_id).in_(user_ids))
        )
        known.preferences = {row.user_id: preferences_of(row) for row in rows.all()}
        subscribed = await session.exec(
            select(PushSubscription.user_id).where(col(PushSubscription.user_id).in_(user_ids)).distinct()
        )
        known.subscribed = set(subscribed.all())
        unread = await session.exec(
            select(Notification.user_id, Notification.discussion_id)
            .where(
                Notification.type == "activity",
                col(Notification.read_at).is_(None),
                col(Notification.user_id).in_(user_ids),
                col(Notification.discussion_id).in_(discussion_ids),
            )
            .distinct()
        )
        known.unread_activity = {(user_id, discussion_id or "") for user_id, discussion_id in unread.all()}
    return known


async def insert_new(db: Database, rows: Sequence[dict[str, Any]]) -> None:
    """Store the rows not stored yet, in one statement, and commit (stored before delivered)."""
    if not rows:
        return
    table = Notification.__table__  # type: ignore[attr-defined]
    insert = postgresql.insert(table) if db.engine.dialect.name == "postgresql" else sqlite.insert(table)
    statement = insert.on_conflict_do_nothing(index_elements=["source_event", "user_id", "type"])
    async with db.session() as session:
        # Many parameter sets: the driver's executemany (one prepared statement), far cheaper
        # to build than one VALUES list of every row.
        await (await session.connection()).execute(statement, list(rows))
        await session.commit()


async def undelivered(db: Database, source_events: Collection[str]) -> list[Notification]:
    """The batch's notifications not yet published in-app, or with a push still pending."""
    async with db.session() as session:
        rows = await session.exec(
            select(Notification).where(
                col(Notification.source_event).in_(source_events),
                or_(col(Notification.delivery_state) == "pending", col(Notification.push_state) == "pending"),
            )
        )
        return list(rows.all())


async def mark_published(db: Database, ids: Collection[str]) -> None:
    if not ids:
        return
    async with db.session() as session:
        await session.exec(update(Notification).where(col(Notification.id).in_(ids)).values(delivery_state="published"))
        await session.commit()


async def unread_of_followers(db: Database, discussion_ids: Collection[str]) -> dict[tuple[str, str], int]:
    """(follower id, discussion id) -> unread count, for the followers of these discussions."""
    async with db.session() as session:
        return await unread_counts(session, discussion_ids=discussion_ids)


async def pending_pushes(db: Database, since: datetime, limit: int) -> list[Notification]:
    """Pushes a crashed holder had queued but not finished."""
    async with db.session() as session:
        rows = await session.exec(
            select(Notification)
            .where(Notification.push_state == "pending", col(Notification.created_at) > since)
            .limit(limit)
        )
        return list(rows.all())
