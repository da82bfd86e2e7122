"""A user's own data: export it (`GET /api/me/export`), delete the account (`DELETE /api/me`).

Deleting an account removes what is only the user's (follows, notifications, push
subscriptions, preferences, memberships, the user row) and keeps what belongs to the
discussions: their responses, discussions and the notifications they caused for others stay,
attributed to one shared "deleted user" (`DELETED_USER_ID`), so threads keep their shape and the
user's id and name are gone from them.

Parley does not own identities (API.md, Identity): a token the issuer signed stays valid after
the deletion, and its next request signs in as a new, empty account (nothing of the old one
comes back). Keeping a person out for good is the issuer's job. A token naming
`DELETED_USER_ID` is refused (`api/common.caller`).
"""

from __future__ import annotations

import secrets
from typing import Any, Literal

from pydantic import Field
from quart import Blueprint, Response
from sqlalchemy import delete, update
from sqlmodel import col, select

from app.api.discussions import response_json
from app.api.notifications import Preferences
from app.core.services import services
from app.domain import audit
from app.domain.models import (
    Discussion,
    DiscussionMember,
    Follow,
    Notification,
    NotificationPreferences,
    Proposition,
    PushSubscription,
    Stance,
    User,
)
from app.domain.models import Response as StoredResponse
from app.domain.notifications import notification_json, preferences_of
from app.domain.users import DELETED_USER_ID, DELETED_USER_NAME
from app.log.events import rfc3339
from app.web.contract import documented
from app.web.requests import caller
from app.web.wire import NotificationOut, ResponseOut, Shape, Timestamp

blueprint = Blueprint("account", __name__)

# An export holds at most this many rows of each kind (bounded memory); `truncated` says so.
MAX_EXPORT_ROWS = 50_000


class Profile(Shape):
    id: str
    name: str
    created_at: Timestamp | None = Field(description="null when the user was never stored")


class FollowExport(Shape):
    discussion_id: str
    created_at: Timestamp
    last_read: str = Field(description="the id of the last response read in it")


class PushSubscriptionExport(Shape):
    endpoint: str
    created_at: Timestamp


class DataExport(Shape):
    profile: Profile
    responses: list[ResponseOut]
    follows: list[FollowExport]
    notifications: list[NotificationOut]
    preferences: Preferences
    push_subscriptions: list[PushSubscriptionExport]
    truncated: list[Literal["responses", "follows", "notifications", "push_subscriptions"]] = Field(
        description=f"the kinds cut at {MAX_EXPORT_ROWS:,} rows"
    )


@blueprint.get("/api/me/export")
@documented("Everything Parley keeps about the caller, as JSON", response=DataExport)
async def export() -> dict[str, Any]:
    identity = await caller()
    user_id = identity.user_id
    truncated: list[str] = []

    def bounded(kind: str, rows: list[Any]) -> list[Any]:
        if len(rows) > MAX_EXPORT_ROWS:
            truncated.append(kind)
        return rows[:MAX_EXPORT_ROWS]

    limit = MAX_EXPORT_ROWS + 1
    async with services().db.session() as session:
        user = await session.get(User, user_id)
        responses = (
            await session.exec(
                select(StoredResponse)
                .where(col(StoredResponse.author_id) == user_id)
                .order_by(col(StoredResponse.id))
                .limit(limit)
            )
        ).all()
        follows = (
            await session.exec(
                select(Follow).where(col(Follow.user_id) == user_id).order_by(col(Follow.created_at)).limit(limit)
            )
        ).all()
        notifications = (
            await session.exec(
                select(Notification)
                .where(col(Notification.user_id) == user_id)
                .order_by(col(Notification.created_at))
                .limit(limit)
            )
        ).all()
        preferences = await session.get(NotificationPreferences, user_id)
        subscriptions = (
            await session.exec(select(PushSubscription).where(col(PushSubscription.user_id) == user_id).limit(limit))
        ).all()
    name = user.name if user is not None else identity.name
    return {
        "profile": {
            "id": user_id,
            "name": name,
            "created_at": None if user is None else rfc3339(user.created_at),
        },
        "responses": bounded("responses", [response_json(r, name) for r in responses]),
        "follows": bounded(
            "follows",
            [
                {
                    "discussion_id": f.discussion_id,
                    "created_at": rfc3339(f.created_at),
                    "last_read": str(f.last_read_response_id),
                }
                for f in follows
            ],
        ),
        "notifications": bounded("notifications", [notification_json(n) for n in notifications]),
        "preferences": preferences_of(preferences),
        "push_subscriptions": bounded(
            "push_subscriptions", [{"endpoint": s.endpoint, "created_at": rfc3339(s.created_at)} for s in subscriptions]
        ),
        "truncated": truncated,
    }


@blueprint.delete("/api/me")
@documented(
    "Delete the caller's account",
    description="Follows, notifications, push subscriptions, preferences, memberships and the user are removed; "
    "responses and discussions stay, as the 'deleted user''s. A token still valid afterwards signs in as a new, "
    "empty account.",
    status=204,
)
async def delete_account() -> Response:
    identity = await caller()
    user_id = identity.user_id
    parley = services()
    async with parley.db.session() as session:
        if await session.get(User, DELETED_USER_ID) is None:
            session.add(User(id=DELETED_USER_ID, name=DELETED_USER_NAME))
            await session.flush()
        # Kept, as the deleted user's: what others replied to and read.
        await session.exec(
            update(StoredResponse).where(col(StoredResponse.author_id) == user_id).values(author_id=DELETED_USER_ID)
        )
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
        await session.commit()
    parley.users.forget(user_id)
    parley.read_access.clear()
    await audit.record(services().db, user_id, "account.delete", f"user:{user_id}")
    return Response(status=204)
