"""Who belongs to a private discussion, and how that changes (API.md, "Discussions").

The creator chooses the members when creating the discussion and later adds or removes them
one at a time (`PUT`/`DELETE /api/discussions/{id}/members/{user_id}`). The creator is never a
member: they read their discussion anyway, and cannot be removed from it.

A change is told to the member on their own user topic, which every stream of theirs reads:
`access_granted` when added, `access_revoked` when removed. The hub of every process hands these
to its read-access cache and, for `access_revoked`, takes the discussion off that user's open
streams at once (app/core/access_watch.py): the notice is the last thing of that discussion they
get. The functions here change rows in the caller's transaction and describe the events; the
caller stages them in the same transaction (app/core/outbox.py), so a change and its notice are
never separated.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import func
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth import Identity
from app.domain.access import readable_discussion
from app.domain.models import Discussion, DiscussionMember, Follow
from app.errors import Conflict, Forbidden, InvalidField
from app.log import topics

MAX_MEMBERS = 1_000

ACCESS_GRANTED = "access_granted"
ACCESS_REVOKED = "access_revoked"
# Why access was revoked (the `reason` of `access_revoked`).
RevokeReason = Literal["member_removed", "account_deleted"]


@dataclass(frozen=True, slots=True)
class AccessEvent:
    """An event to fire on a user's topic about their access to one discussion."""

    user_id: str
    event_type: str
    discussion_id: str
    payload: dict[str, Any]

    @property
    def topic(self) -> str:
        return topics.user(self.user_id)


def granted(discussion_id: str, user_id: str) -> AccessEvent:
    return AccessEvent(user_id, ACCESS_GRANTED, discussion_id, {"discussion_id": discussion_id})


def revoked(discussion_id: str, user_id: str, reason: RevokeReason) -> AccessEvent:
    return AccessEvent(user_id, ACCESS_REVOKED, discussion_id, {"discussion_id": discussion_id, "reason": reason})


@dataclass(frozen=True, slots=True)
class MembershipChange:
    discussion_id: str
    user_id: str
    member: bool  # after the call
    changed: bool  # false: it already was so (nothing to fire or audit)

    def event(self) -> AccessEvent | None:
        if not self.changed:
            return None
        if self.member:
            return granted(self.discussion_id, self.user_id)
        return revoked(self.discussion_id, self.user_id, "member_removed")

    def json(self) -> dict[str, Any]:
        return {"discussion_id": self.discussion_id, "user_id": self.user_id, "member": self.member}


def add_initial_members(session: AsyncSession, discussion: Discussion, user_ids: Iterable[str]) -> list[str]:
    """The members named when creating the discussion (the creator is not one); returns them."""
    members = sorted(set(user_ids) - {discussion.created_by})
    for user_id in members:
        session.add(DiscussionMember(discussion_id=discussion.id, user_id=user_id))
    return members


async def set_member(
    session: AsyncSession, identity: Identity, discussion_id: str, user_id: str, *, member: bool
) -> MembershipChange:
    """Add (`member=True`) or remove `user_id`, in the session's transaction (not committed).

    404 when the caller cannot read the discussion, 403 `forbidden` when they can but did not
    create it, 409 `discussion_not_private` for a public one, 409 `too_many_members` past
    `MAX_MEMBERS`, 422 for the creator's own id."""
    discussion = await readable_discussion(session, identity, discussion_id)
    if discussion.created_by != identity.user_id:
        raise Forbidden("only the discussion's creator may change its members")
    if discussion.visibility != "private":
        raise Conflict("a public discussion has no members: everyone reads it", code="discussion_not_private")
    if user_id == discussion.created_by:
        raise InvalidField("user_id: the creator always reads their discussion and is not a member")
    existing = await session.get(DiscussionMember, (discussion.id, user_id))
    if member and existing is None:
        count = await session.exec(
            select(func.count()).select_from(DiscussionMember).where(DiscussionMember.discussion_id == discussion.id)
        )
        if count.one() >= MAX_MEMBERS:
            raise Conflict(f"a discussion has at most {MAX_MEMBERS} members", code="too_many_members")
        session.add(DiscussionMember(discussion_id=discussion.id, user_id=user_id))
        return MembershipChange(discussion.id, user_id, member=True, changed=True)
    if not member and existing is not None:
        await session.delete(existing)
        # Their follow goes too: it would show them the title and unread count of what they
        # can no longer read.
        follow = await session.get(Follow, (user_id, discussion.id))
        if follow is not None:
            await session.delete(follow)
        return MembershipChange(discussion.id, user_id, member=False, changed=True)
    return MembershipChange(discussion.id, user_id, member=member, changed=False)


async def private_access_of(session: AsyncSession, user_id: str) -> list[str]:
    """The private discussions `user_id` reads as member or creator (what deleting the account
    takes away from their open streams)."""
    member_of = await session.exec(select(DiscussionMember.discussion_id).where(DiscussionMember.user_id == user_id))
    created = await session.exec(
        select(Discussion.id).where(Discussion.created_by == user_id, Discussion.visibility == "private")
    )
    return sorted({*member_of.all(), *created.all()})
