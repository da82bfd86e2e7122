"""A user's own data: export it (`GET /api/me/export`), delete the account (`DELETE /api/me`).

Deleting an account removes what is only the user's (follows, notifications, push
subscriptions, preferences, memberships, the user row) and keeps what belongs to the
discussions: their responses, discussions and the notifications they caused for others stay,
attributed to one shared "deleted user" (`DELETED_USER_ID`), so threads keep their shape and the
user's id and name are gone from them.

Parley does not own identities (API.md, Identity): a token the issuer signed stays valid after
the deletion, and its next request signs in as a new, empty account (nothing of the old one
comes back). Keeping a person out for good is the issuer's job. A token naming
`DELETED_USER_ID` is refused (`app/web/requests.caller`). The queries are app/domain/account.py.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from quart import Blueprint, Response

from app.api.members import stage
from app.api.notifications import Preferences
from app.core import outbox
from app.core.services import services
from app.domain import account, audit
from app.domain.membership import revoked
from app.domain.notifications import notification_json
from app.domain.preferences import preferences_of
from app.domain.responses import response_json
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

    async with services().db.session() as session:
        kept = await account.kept_about(session, user_id, MAX_EXPORT_ROWS + 1)
    user = kept.user
    name = user.name if user is not None else identity.name
    return {
        "profile": {
            "id": user_id,
            "name": name,
            "created_at": None if user is None else rfc3339(user.created_at),
        },
        "responses": bounded("responses", [response_json(r, name) for r in kept.responses]),
        "follows": bounded(
            "follows",
            [
                {
                    "discussion_id": f.discussion_id,
                    "created_at": rfc3339(f.created_at),
                    "last_read": str(f.last_read_response_id),
                }
                for f in kept.follows
            ],
        ),
        "notifications": bounded("notifications", [notification_json(n) for n in kept.notifications]),
        "preferences": preferences_of(kept.preferences),
        "push_subscriptions": bounded(
            "push_subscriptions",
            [{"endpoint": s.endpoint, "created_at": rfc3339(s.created_at)} for s in kept.push_subscriptions],
        ),
        "truncated": truncated,
    }


@blueprint.delete("/api/me")
@documented(
    "Delete the caller's account",
    description="Their open streams get `access_revoked` for each private discussion they could read. "
    "Follows, notifications, push subscriptions, preferences, memberships and the user are removed; "
    "responses and discussions stay, as the 'deleted user''s. A token still valid afterwards signs in as a new, "
    "empty account.",
    status=204,
    fires=["access_revoked"],
)
async def delete_account() -> Response:
    identity = await caller()
    user_id = identity.user_id
    parley = services()
    async with parley.db.session() as session:
        lost = await account.delete_account(session, user_id)
        # Their open streams stop carrying the private discussions they read (on every process).
        entries = [stage(session, revoked(discussion_id, user_id, "account_deleted"), None) for discussion_id in lost]
        await session.commit()
    parley.users.forget(user_id)
    parley.read_access.clear()
    for entry in entries:
        await outbox.relay(parley, entry)
    await audit.record(services().db, user_id, "account.delete", f"user:{user_id}")
    return Response(status=204)
