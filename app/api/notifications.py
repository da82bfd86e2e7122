"""Notifications, preferences and Web Push subscriptions (API.md, "Notifications and Web Push").

The list over REST is the source of truth (NFR-009): a client that reconnects or missed an
event refetches it. Reading fires `notification_read` on the user's own topic, so every other
tab and device of theirs marks it read too (FR-011).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from quart import Blueprint, Response, current_app, send_from_directory

from app.core.services import services
from app.domain import inbox, preferences
from app.domain.models import utcnow
from app.domain.notifications import DEFAULT_PREFERENCES, notification_json
from app.errors import InvalidField, NotFound, Unavailable
from app.log import topics
from app.log.events import rfc3339
from app.notify.push_target import RefusedTarget, UnresolvableTarget, check_endpoint
from app.notify.webpush import MAX_ENDPOINT_CHARS, InvalidSubscription, PushSender, validate_subscription
from app.web.contract import documented
from app.web.requests import PageSize, caller, json_body, query_args
from app.web.wire import NotificationOut, Shape

blueprint = Blueprint("notifications", __name__)

DEFAULT_PAGE = 50
MAX_PAGE = 200
MAX_ID_CHARS = inbox.MAX_NOTIFICATION_ID_CHARS


class StrictBody(BaseModel):
    # extra="forbid": unknown preference keys are refused (422), never silently ignored.
    model_config = ConfigDict(strict=True, extra="forbid")


class PreferencesUpdate(StrictBody):
    """A PUT may name any subset of the keys; the others keep their value. Only the keys
    sent are applied (`model_fields_set`); the defaults (a new user's) are never written."""

    replies: bool = DEFAULT_PREFERENCES["replies"]
    mentions: bool = DEFAULT_PREFERENCES["mentions"]
    followed: bool = DEFAULT_PREFERENCES["followed"]
    common_ground: bool = DEFAULT_PREFERENCES["common_ground"]
    push: bool = DEFAULT_PREFERENCES["push"]


Base64Url = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_-]+={0,2}$")]
Endpoint = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ENDPOINT_CHARS, pattern=r"^https?://[^/?#\s]+"),
    Field(description="the push service's URL (https; http and loopback only with PARLEY_PUSH_ALLOW_INSECURE)"),
]


class SubscriptionKeys(StrictBody):
    p256dh: Base64Url = Field(description="the browser's P-256 public key, uncompressed (65 bytes), base64url")
    auth: Base64Url = Field(description="the 16-byte auth secret, base64url")


class NewSubscription(BaseModel):
    # A browser's PushSubscription.toJSON() also has `expirationTime`: accept and ignore it.
    model_config = ConfigDict(strict=True, extra="ignore")
    endpoint: Endpoint
    keys: SubscriptionKeys


class SubscriptionRef(StrictBody):
    endpoint: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ENDPOINT_CHARS)]


class NotificationsQuery(BaseModel):
    unread: bool = Field(default=False, description="only the unread ones")
    limit: PageSize = Field(default=DEFAULT_PAGE, ge=1, le=MAX_PAGE)


class Preferences(Shape):
    """What the user is notified of (FR-010); `push` also sends them as Web Push."""

    replies: bool
    mentions: bool
    followed: bool
    common_ground: bool
    push: bool


class ReadAll(Shape):
    read: int = Field(ge=0, description="how many were unread")
    ids: list[str]


class VapidKey(Shape):
    key: str = Field(description="the VAPID public key, base64url: `applicationServerKey` for pushManager.subscribe")


class SubscriptionState(Shape):
    endpoint: str
    subscribed: bool


def pusher() -> PushSender:
    value: PushSender = current_app.extensions["parley.push"]
    return value


@blueprint.get("/api/notifications")
@documented("The caller's notifications, newest first", query=NotificationsQuery, response=list[NotificationOut])
async def list_notifications() -> list[dict[str, Any]]:
    identity = await caller()
    wanted = query_args(NotificationsQuery)
    async with services().db.session() as session:
        found = await inbox.notifications(session, identity.user_id, unread=wanted.unread, limit=wanted.limit)
        return [notification_json(n) for n in found]


async def _announce_read(user_id: str, ids: list[str], read_at: str) -> None:
    await services().publish(
        topics.user(user_id),
        "notification_read",
        discussion_id=None,
        user=None,
        payload={"ids": ids, "read_at": read_at},
    )


@blueprint.post("/api/notifications/<notification_id>/read")
@documented(
    "Mark one notification read",
    description="Fires `notification_read` to the caller's other tabs and devices (only if it was unread).",
    response=NotificationOut,
    errors=[NotFound],
    fires=["notification_read"],
)
async def read_one(notification_id: str) -> dict[str, Any]:
    identity = await caller()
    async with services().db.session() as session:
        notification = await inbox.own_notification(session, identity.user_id, notification_id)
        if notification is None:
            raise NotFound(f"no notification {notification_id[:MAX_ID_CHARS]!r}")
        changed = await inbox.mark_read(session, notification)
        body = notification_json(notification)
    if changed:
        await _announce_read(identity.user_id, [notification.id], body["read_at"])
    return body


@blueprint.post("/api/notifications/read-all")
@documented("Mark every notification read", response=ReadAll, fires=["notification_read"])
async def read_all() -> dict[str, Any]:
    identity = await caller()
    now = utcnow()
    async with services().db.session() as session:
        ids = await inbox.mark_all_read(session, identity.user_id, now)
    if ids:
        await _announce_read(identity.user_id, ids, rfc3339(now))
    return {"read": len(ids), "ids": ids}


@blueprint.get("/api/notification-preferences")
@documented("The caller's notification preferences", response=Preferences)
async def get_preferences() -> dict[str, bool]:
    identity = await caller()
    async with services().db.session() as session:
        return await preferences.preferences(session, identity.user_id)


@blueprint.put("/api/notification-preferences")
@documented(
    "Change notification preferences",
    description="Any subset of the keys; the others keep their value. An unknown key is refused (422).",
    body=PreferencesUpdate,
    response=Preferences,
)
async def put_preferences() -> dict[str, bool]:
    identity = await caller()
    change = await json_body(PreferencesUpdate)
    values = change.model_dump(include=change.model_fields_set)
    async with services().db.session() as session:
        return await preferences.change(session, identity.user_id, values)


@blueprint.get("/api/push/vapid-public-key")
@documented("The key a browser subscribes to Web Push with", response=VapidKey)
async def vapid_key() -> dict[str, str]:
    await caller()
    return {"key": pusher().public_key}


@blueprint.post("/api/push/subscriptions")
@documented(
    "Register a browser's Push API subscription",
    description="201 when new, 200 when the endpoint was known (it now belongs to the caller, with these keys).",
    body=NewSubscription,
    response=SubscriptionState,
    status=201,
    also={200: SubscriptionState},
)
async def subscribe() -> tuple[dict[str, Any], int]:
    identity = await caller()
    new = await json_body(NewSubscription)
    try:
        validate_subscription(
            new.endpoint, new.keys.p256dh, new.keys.auth, allow_insecure=services().settings.push_allow_insecure
        )
    except InvalidSubscription as invalid:
        raise InvalidField(str(invalid)) from None
    if not services().settings.push_allow_insecure:
        try:
            await check_endpoint(new.endpoint)
        except RefusedTarget as refused:
            raise InvalidField(f"endpoint: {refused}; push services have public addresses") from None
        except UnresolvableTarget as unresolvable:
            if unresolvable.temporary:
                raise Unavailable(f"endpoint: {unresolvable}; retry") from None
            raise InvalidField(f"endpoint: {unresolvable}") from None
    async with services().db.session() as session:
        created = await inbox.save_subscription(session, identity.user_id, new.endpoint, new.keys.p256dh, new.keys.auth)
    return {"endpoint": new.endpoint, "subscribed": True}, 201 if created else 200


@blueprint.delete("/api/push/subscriptions")
@documented("Remove a Push API subscription of the caller's", body=SubscriptionRef, response=SubscriptionState)
async def unsubscribe() -> dict[str, Any]:
    identity = await caller()
    ref = await json_body(SubscriptionRef)
    async with services().db.session() as session:
        await inbox.remove_subscription(session, identity.user_id, ref.endpoint)
    return {"endpoint": ref.endpoint, "subscribed": False}


@blueprint.get("/sw.js")
@documented("The page's service worker (Web Push)", media_type="text/javascript", auth=False, errors=[NotFound])
async def service_worker() -> Response:
    """`static/sw.js` served from the root, so its scope can be the whole site: a worker's
    scope may not reach above its own path without this header."""
    static_folder = current_app.static_folder
    if static_folder is None:
        raise NotFound("no static folder")
    response: Response = await send_from_directory(static_folder, "sw.js")
    response.headers["Service-Worker-Allowed"] = "/"
    # A stale worker would keep showing old notification formats: always revalidate.
    response.headers["Cache-Control"] = "no-cache"
    return response
