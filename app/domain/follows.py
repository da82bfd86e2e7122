"""Unread counts of followed discussions (FR-008): the one definition, for REST and the worker.

A follower's unread responses are those after the last one they read, by someone else, not
deleted. Counted in one GROUP BY for any set of follows, so neither a user's follow list nor a
batch of the notification worker pays a query per discussion.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.domain.models import Follow, Response


async def unread_counts(session: AsyncSession, follows: ColumnElement[bool]) -> dict[tuple[str, str], int]:
    """(discussion id, user id) -> unread responses, for every follow matching `follows`
    (e.g. `Follow.user_id == me`, or `col(Follow.discussion_id).in_(ids)`)."""
    rows = await session.exec(
        select(Follow.discussion_id, Follow.user_id, func.count(col(Response.id)))
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
        .where(follows)
        .group_by(col(Follow.discussion_id), col(Follow.user_id))
    )
    return {(discussion_id, user_id): count for discussion_id, user_id, count in rows.all()}
