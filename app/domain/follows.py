"""Follows and unread counts (FR-008): one definition of "unread", for REST and the worker.

A follower's unread responses in a discussion are those after the last one they read
(`Follow.last_read_response_id`), not their own, not deleted. `GET /api/me/follows` and the
notification worker's `activity` updates both count with `unread_counts`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import and_, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.domain.models import Discussion, Follow, Response
from app.log.events import rfc3339


async def unread_counts(
    session: AsyncSession,
    *,
    user_id: str | None = None,
    discussion_id: str | None = None,
    user_ids: Collection[str] | None = None,
) -> dict[tuple[str, str], int]:
    """Unread responses by (follower, discussion), for the follows matching every filter given:
    one follower's (`user_id`), one discussion's (`discussion_id`), some followers' (`user_ids`)."""
    query = (
        select(Follow.user_id, Follow.discussion_id, func.count(col(Response.id)))
        .select_from(Follow)
        .outerjoin(
            Response,
            and_(
                col(Response.discussion_id) == col(Follow.discussion_id),
                col(Response.id) > col(Follow.last_read_response_id),
                col(Response.author_id) != col(Follow.user_id),
                col(Response.deleted).is_(False),
            ),
        )
        .group_by(col(Follow.user_id), col(Follow.discussion_id))
    )
    if user_id is not None:
        query = query.where(Follow.user_id == user_id)
    if discussion_id is not None:
        query = query.where(Follow.discussion_id == discussion_id)
    if user_ids is not None:
        query = query.where(col(Follow.user_id).in_(list(user_ids)))
    rows = await session.exec(query)
    return {(follower, discussion): int(count) for follower, discussion, count in rows.all()}


async def follow(session: AsyncSession, user_id: str, discussion_id: str) -> None:
    """Follow from now on: what was posted before counts as read. Following twice is a no-op."""
    if await session.get(Follow, (user_id, discussion_id)) is not None:
        return
    newest = await session.exec(select(func.max(Response.id)).where(Response.discussion_id == discussion_id))
    session.add(Follow(user_id=user_id, discussion_id=discussion_id, last_read_response_id=newest.one() or 0))
    try:
        await session.commit()
    except IntegrityError:  # followed twice at once: already following
        await session.rollback()


async def unfollow(session: AsyncSession, user_id: str, discussion_id: str) -> None:
    existing = await session.get(Follow, (user_id, discussion_id))
    if existing is not None:
        await session.delete(existing)
        await session.commit()


async def mark_read(session: AsyncSession, user_id: str, discussion_id: str, response_id: int) -> None:
    """A follower has read up to `response_id` (commits only when that moves their mark)."""
    follow = await session.get(Follow, (user_id, discussion_id))
    if follow is not None and follow.last_read_response_id < response_id:
        follow.last_read_response_id = response_id
        await session.commit()


async def followed_by(session: AsyncSession, user_id: str) -> list[dict[str, Any]]:
    """The discussions `user_id` follows, newest activity first, with their unread counts."""
    rows = await session.exec(
        select(Discussion)
        .join(Follow, col(Discussion.id) == col(Follow.discussion_id))
        .where(Follow.user_id == user_id)
        .order_by(col(Discussion.last_activity_at).desc())
    )
    discussions = list(rows.all())
    unread = await unread_counts(session, user_id=user_id)
    return [
        {
            "discussion_id": discussion.id,
            "title": discussion.title,
            "unread_count": unread.get((user_id, discussion.id), 0),
            "last_activity_at": rfc3339(discussion.last_activity_at),
        }
        for discussion in discussions
    ]
