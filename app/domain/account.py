"""A user's own data: everything kept about them (export), and deleting the account.

Deleting removes what is only the user's (follows, notifications, push subscriptions,
preferences, memberships, the user row) and keeps what belongs to the discussions: their
responses, discussions and the notifications they caused for others stay, attributed to one
shared "deleted user" (`DELETED_USER_ID`), so threads keep their shape and the user's id and
name are gone from them. See app/api/account.py for what a still-valid token does afterwards.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import delete, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.domain.membership import private_access_of
from app.domain.models import (
    Discussion,
    DiscussionMember,
    Follow,
    Notification,
    NotificationPreferences,
    Proposition,
    PushSubscription,
    Response,
    Stance,
    User,
)
from app.domain.users import DELETED_USER_ID, DELETED_USER_NAME


@dataclass(frozen=True, slots=True)
class Kept:
    """What Parley keeps about one user (each list at most the `limit` asked for)."""

    user: User | None
    responses: list[Response]
    follows: list[Follow]
    notifications: list[Notification]
    preferences: NotificationPreferences | None
    push_subscriptions: list[PushSubscription]


async def kept_about(session: AsyncSession, user_id: str, limit: int) -> Kept:
    responses = await session.exec(
        select(Response).where(col(Response.author_id) == user_id).order_by(col(Response.id)).limit(limit)
    )
    follows = await session.exec(
        select(Follow).where(col(Follow.user_id) == user_id).order_by(col(Follow.created_at)).limit(limit)
    )
    notifications = await session.exec(
        select(Notification)
        .where(col(Notification.user_id) == user_id)
        .order_by(col(Notification.created_at))
        .limit(limit)
    )
    subscriptions = await session.exec(
        select(PushSubscription).where(col(PushSubscription.user_id) == user_id).limit(limit)
    )
    return Kept(
        user=await session.get(User, user_id),
        responses=list(responses.all()),
        follows=list(follows.all()),
        notifications=list(notifications.all()),
        preferences=await session.get(NotificationPreferences, user_id),
        push_subscriptions=list(subscriptions.all()),
    )


async def delete_account(session: AsyncSession, user_id: str) -> list[str]:
    """Delete the account in the session's transaction (not committed); returns the private
    discussions the user could read and no longer can (their open streams must be told)."""
    lost = await private_access_of(session, user_id)
    if await session.get(User, DELETED_USER_ID) is None:
        session.add(User(id=DELETED_USER_ID, name=DELETED_USER_NAME))
        await session.flush()
    # Kept, as the deleted user's: what others replied to and read.
    await session.exec(update(Response).where(col(Response.author_id) == user_id).values(author_id=DELETED_USER_ID))
    await session.exec(
        update(Discussion).where(col(Discussion.created_by) == user_id).values(created_by=DELETED_USER_ID)
    )
    await session.exec(
        update(Proposition).where(col(Proposition.created_by) == user_id).values(created_by=DELETED_USER_ID)
    )
    # Their stances keep counting in the analyses (the numbers others saw stay true), under a
    # name of their own that says nothing of who they were: one participant, still distinct.
    await session.exec(
        update(Stance).where(col(Stance.user_id) == user_id).values(user_id=f"deleted:{secrets.token_hex(8)}")
    )
    await session.exec(
        update(Notification)
        .where(col(Notification.actor_id) == user_id)
        .values(actor_id=DELETED_USER_ID, actor_name=DELETED_USER_NAME)
    )
    # Removed: what was only theirs.
    for table, column in (
        (Follow, Follow.user_id),
        (Notification, Notification.user_id),
        (PushSubscription, PushSubscription.user_id),
        (NotificationPreferences, NotificationPreferences.user_id),
        (DiscussionMember, DiscussionMember.user_id),
        (User, User.id),
    ):
        await session.exec(delete(table).where(col(column) == user_id))
    return lost
