"""Discussions: creating them and listing them (API.md, "Discussions and responses").

Queries only; the REST handlers (app/api/discussions.py) validate input and shape answers.
Read access is `app.domain.access`; members are `app.domain.membership`.
"""

from __future__ import annotations

import secrets
from typing import Any, Literal

from sqlalchemy import and_, distinct, func, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.domain.access import discussion_json
from app.domain.membership import add_initial_members
from app.domain.models import Discussion, DiscussionMember, Response
from app.errors import InvalidField
from app.log.events import rfc3339

Scope = Literal["public", "mine"]

__all__ = ["Scope", "create", "discussion_json", "listing"]


async def create(
    session: AsyncSession, creator_id: str, title: str, visibility: str, members: list[str]
) -> tuple[Discussion, list[str]]:
    """A new discussion and its members, committed; returns it and the members stored."""
    discussion = Discussion(id=secrets.token_urlsafe(12), title=title, visibility=visibility, created_by=creator_id)
    session.add(discussion)
    await session.flush()
    stored = add_initial_members(session, discussion, members)
    await session.commit()
    return discussion, stored


async def listing(
    session: AsyncSession, user_id: str, scope: Scope, limit: int, before_id: str | None
) -> list[dict[str, Any]]:
    """`public`: recent public discussions. `mine`: those `user_id` created, is a member of, or
    responded to and can still read. Newest activity first, after `before_id` if given; each
    with `participant_count` (distinct people who responded) and `last_activity_at`."""
    query = select(Discussion)
    if scope == "public":
        query = query.where(Discussion.visibility == "public")
    else:
        member_of = select(DiscussionMember.discussion_id).where(DiscussionMember.user_id == user_id)
        responded_to = select(Response.discussion_id).where(Response.author_id == user_id)
        # Responded to but no longer readable (removed from a private one): not listed.
        query = query.where(
            or_(
                col(Discussion.created_by) == user_id,
                col(Discussion.id).in_(member_of),
                and_(col(Discussion.visibility) == "public", col(Discussion.id).in_(responded_to)),
            )
        )
    if before_id is not None:
        before = await session.get(Discussion, before_id[:64])
        if before is None:
            raise InvalidField("before: no such discussion")
        query = query.where(
            or_(
                col(Discussion.last_activity_at) < before.last_activity_at,
                and_(col(Discussion.last_activity_at) == before.last_activity_at, col(Discussion.id) < before.id),
            )
        )
    rows = await session.exec(
        query.order_by(col(Discussion.last_activity_at).desc(), col(Discussion.id).desc()).limit(limit)
    )
    discussions = list(rows.all())
    counts = await _participant_counts(session, [d.id for d in discussions])
    return [
        {
            **discussion_json(d),
            "participant_count": counts.get(d.id, 0),
            "last_activity_at": rfc3339(d.last_activity_at),
        }
        for d in discussions
    ]


async def _participant_counts(session: AsyncSession, discussion_ids: list[str]) -> dict[str, int]:
    if not discussion_ids:
        return {}
    grouped = await session.exec(
        select(Response.discussion_id, func.count(distinct(col(Response.author_id))))
        .where(col(Response.discussion_id).in_(discussion_ids))
        .group_by(col(Response.discussion_id))
    )
    return {discussion_id: int(count) for discussion_id, count in grouped.all()}
