"""The event envelope and each event type's payload, as pydantic models (API.md, Streams).

`EVENT_PAYLOADS` names a payload model for every type in `app.log.events.EVENT_TYPES` (a test
holds the two equal); `EVENT_MODELS` are the envelopes, one per type, and `AnyEvent` their
union, discriminated by `type`. The OpenAPI document publishes them as components, and the
poll answer (`{"events": [...]}`) is checked against them when `PARLEY_CHECK_RESPONSES` is on.
Publishers keep building dicts (`Services.publish`): an envelope is made once per event and
shared by every reader, so it is not re-validated on the hot path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, create_model

from app.web.wire import (
    Activity,
    AnalysisDocument,
    BroadcastOut,
    NotificationOut,
    PropositionOut,
    ResponseOut,
    Shape,
    Timestamp,
    UserRef,
)


class Envelope(Shape):
    """Every event, on every transport (FR-030)."""

    id: str = Field(description="the event's cursor: resume after it (`Last-Event-ID`, `cursor`)")
    type: str
    ts: Timestamp
    discussion_id: str | None
    user: UserRef | None = Field(description="who caused it, when a user did")
    payload: dict[str, Any]


class ResponsePayload(Shape):
    response: ResponseOut


class NoPayload(Shape):
    """Nothing beyond the envelope: `user` and `discussion_id` say it all."""


class PresencePayload(Shape):
    status: Literal["online", "away", "offline"] = Field(
        description="the user's status in the discussion, all their connections together"
    )


class NotificationPayload(Shape):
    notification: NotificationOut


class NotificationReadPayload(Shape):
    ids: list[str] = Field(description="the notifications now read, on every tab and device")
    read_at: Timestamp


class SyncRequiredPayload(Shape):
    reason: Literal["invalid_cursor", "unknown_epoch", "unknown_position", "expired", "too_far_behind"]


class AuthExpiredPayload(Shape):
    reason: Literal["token_expired"]


class SessionIdlePayload(Shape):
    reason: Literal["idle"]


class AccessGrantedPayload(Shape):
    discussion_id: str = Field(description="the private discussion the user may now read")


class AccessRevokedPayload(Shape):
    discussion_id: str = Field(description="the private discussion the user may no longer read")
    reason: Literal["member_removed", "account_deleted"]


class AnalysisRefreshingPayload(Shape):
    version: int = Field(ge=0, description="the version a recomputation now running will replace")


class PropositionAddedPayload(Shape):
    proposition: PropositionOut


EVENT_PAYLOADS: Mapping[str, type[BaseModel]] = {
    "response_posted": ResponsePayload,
    "response_edited": ResponsePayload,
    "response_deleted": ResponsePayload,
    "analysis_refreshing": AnalysisRefreshingPayload,
    "analysis_updated": AnalysisDocument,
    "proposition_added": PropositionAddedPayload,
    "typing_started": NoPayload,
    "typing_stopped": NoPayload,
    "user_joined": PresencePayload,
    "user_left": PresencePayload,
    "presence_changed": PresencePayload,
    "notification": NotificationPayload,
    "notification_read": NotificationReadPayload,
    "activity": Activity,
    "broadcast": BroadcastOut,
    "sync_required": SyncRequiredPayload,
    "auth_expired": AuthExpiredPayload,
    "session_idle": SessionIdlePayload,
    "access_granted": AccessGrantedPayload,
    "access_revoked": AccessRevokedPayload,
}


def _envelope_for(event_type: str, payload: type[BaseModel]) -> type[BaseModel]:
    name = "".join(part.title() for part in event_type.split("_")) + "Event"
    literal: Any = Literal[event_type]
    model: type[BaseModel] = create_model(name, __base__=Envelope, type=(literal, ...), payload=(payload, ...))
    return model


EVENT_MODELS: Mapping[str, type[BaseModel]] = {
    event_type: _envelope_for(event_type, payload) for event_type, payload in sorted(EVENT_PAYLOADS.items())
}

# Built at runtime from the table above, so mypy sees it as a value, not a type.
AnyEvent: Any = Annotated[Union[tuple(EVENT_MODELS.values())], Field(discriminator="type")]  # noqa: UP007
