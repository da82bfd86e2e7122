"""Who may see what (NFR-014). Public discussions: every authenticated user. Private: the
creator and members only, and to anyone else they do not exist (404, never 403)."""

from __future__ import annotations

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from .auth import Identity
from .errors import NotFound
from .models import Discussion, DiscussionMember

MAX_ID_CHARS = 64


async def readable_discussion(session: AsyncSession, identity: Identity, discussion_id: str) -> Discussion:
    not_found = NotFound(f"no discussion {discussion_id[:MAX_ID_CHARS]!r}")
    if not discussion_id or len(discussion_id) > MAX_ID_CHARS:
        raise not_found
    discussion = await session.get(Discussion, discussion_id)
    if discussion is None:
        raise not_found
    if discussion.visibility == "private" and discussion.created_by != identity.user_id:
        member = await session.exec(
            select(DiscussionMember).where(
                DiscussionMember.discussion_id == discussion_id, DiscussionMember.user_id == identity.user_id
            )
        )
        if member.first() is None:
            raise not_found
    return discussion
