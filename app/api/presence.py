"""Presence and typing over REST (API.md, "Presence, typing, broadcasts").

- `PUT /api/discussions/{id}/typing {"typing": bool}`: for clients without a WebSocket. A flood
  is throttled (one broadcast per user and discussion per 500 ms) silently; past the user's
  typing limit (`PARLEY_TYPING_LIMIT_PER_MIN`, all discussions together) it is 429.
- `PUT /api/presence {"status": "online"|"away"}`: per *user*: every connection of the caller's,
  on every server, takes that status (a REST call cannot name one SSE connection; a WebSocket
  sets its own connection's status with a `presence` message). Limited per user
  (`PARLEY_PRESENCE_LIMIT_PER_MIN`, 429): each change reaches every discussion the user is in.
- `GET /api/discussions/{id}/presence`: `{"count","participants","typing"}`.
A discussion the caller may not read is 404 (NFR-014); a status outside the two is 422.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint

from app.core.services import services
from app.errors import NotFound, RateLimited
from app.presence.store import Status
from app.web.contract import documented
from app.web.requests import caller, ensure_readable, json_body
from app.web.wire import Shape, UserRef

blueprint = Blueprint("presence", __name__)


class TypingSignal(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    typing: bool


class PresenceSignal(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    status: Status


class TypingState(Shape):
    discussion_id: str
    typing: bool


class PresenceState(Shape):
    status: Status


class Participant(Shape):
    id: str
    name: str
    status: Status


class PresenceSnapshot(Shape):
    count: int = Field(ge=0)
    participants: list[Participant]
    typing: list[UserRef] = Field(description="who is typing now")


@blueprint.put("/api/discussions/<discussion_id>/typing")
@documented(
    "Say whether the caller is typing (clients without a WebSocket)",
    description="Floods are throttled (one broadcast per user and discussion per 500 ms), never an error.",
    body=TypingSignal,
    response=TypingState,
    errors=[NotFound, RateLimited],
    fires=["typing_started", "typing_stopped"],
)
async def put_typing(discussion_id: str) -> dict[str, Any]:
    identity = await caller()
    signal = await json_body(TypingSignal)
    await services().rate_limit.hit(identity.user_id, "typing")
    await ensure_readable(identity, discussion_id)
    await services().presence.typing(discussion_id, identity, signal.typing)
    return {"discussion_id": discussion_id, "typing": signal.typing}


@blueprint.put("/api/presence")
@documented(
    "Set the caller's status on all their connections (page visible or hidden)",
    body=PresenceSignal,
    response=PresenceState,
    errors=[RateLimited],
    fires=["presence_changed"],
)
async def put_presence() -> dict[str, Any]:
    identity = await caller()
    signal = await json_body(PresenceSignal)
    await services().rate_limit.hit(identity.user_id, "presence")
    await services().presence.set_user_status(identity, signal.status)
    return {"status": signal.status}


@blueprint.get("/api/discussions/<discussion_id>/presence")
@documented("Who is in a discussion now, and who is typing", response=PresenceSnapshot, errors=[NotFound])
async def get_presence(discussion_id: str) -> dict[str, object]:
    identity = await caller()
    await ensure_readable(identity, discussion_id)
    snapshot = await services().presence.snapshot(discussion_id)
    return snapshot.as_json()
