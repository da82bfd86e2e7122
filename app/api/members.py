"""Members of a private discussion: `PUT` / `DELETE /api/discussions/{id}/members/{user_id}`.

Its creator adds or removes one member at a time (app/domain/membership.py decides). The change
and its event (`access_granted` / `access_revoked` on the member's own topic) commit together
through the outbox; once the event is in the log, every process forgets the discussion's cached
readers and a removed member's open streams stop carrying it (app/core/access_watch.py).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from quart import Blueprint
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from app.core import outbox
from app.core.services import services
from app.domain import audit, membership
from app.domain.models import OutboxEntry
from app.errors import Conflict, Forbidden, InvalidField, NotFound, RateLimited
from app.web.contract import documented
from app.web.requests import caller
from app.web.wire import Shape

blueprint = Blueprint("members", __name__)

MAX_USER_ID_CHARS = 200
ERRORS = [
    Forbidden,
    NotFound,
    (Conflict, "discussion_not_private"),
    (InvalidField, "invalid_field"),
    RateLimited,
]


class MemberState(Shape):
    discussion_id: str
    user_id: str
    member: bool = Field(description="whether the user is a member now")


@blueprint.put("/api/discussions/<discussion_id>/members/<user_id>")
@documented(
    "Add a member to a private discussion (its creator only)",
    description=(
        "Idempotent: adding a member twice answers the same and fires nothing the second time. The new "
        "member's streams get `access_granted`. A public discussion: 409 `discussion_not_private`; past "
        f"{membership.MAX_MEMBERS} members: 409 `too_many_members`; the creator's own id: 422."
    ),
    response=MemberState,
    errors=[*ERRORS, (Conflict, "too_many_members")],
    fires=[membership.ACCESS_GRANTED],
)
async def add_member(discussion_id: str, user_id: str) -> dict[str, Any]:
    return await _change(discussion_id, user_id, member=True)


@blueprint.delete("/api/discussions/<discussion_id>/members/<user_id>")
@documented(
    "Remove a member from a private discussion (its creator only)",
    description=(
        "The member loses access at once, also on open connections: each of their streams (SSE, WebSocket, "
        "long-poll, on every server) gets `access_revoked` with the discussion's id and none of its events "
        "after it; their follow of it is removed. Removing a non-member answers `member: false` and fires nothing."
    ),
    response=MemberState,
    errors=ERRORS,
    fires=[membership.ACCESS_REVOKED],
)
async def remove_member(discussion_id: str, user_id: str) -> dict[str, Any]:
    return await _change(discussion_id, user_id, member=False)


async def _change(discussion_id: str, user_id: str, *, member: bool) -> dict[str, Any]:
    identity = await caller()
    if len(user_id) > MAX_USER_ID_CHARS:
        raise InvalidField(f"user_id: at most {MAX_USER_ID_CHARS} characters")
    parley = services()
    await parley.rate_limit.hit(identity.user_id)
    async with parley.db.session() as session:
        change = await membership.set_member(session, identity, discussion_id, user_id, member=member)
        event = change.event()
        if event is None:
            return change.json()
        entry = stage(session, event, identity.public)
        try:
            await session.commit()
        except IntegrityError:  # the same member added twice at once: the other request did it
            await session.rollback()
            return membership.MembershipChange(change.discussion_id, user_id, member=True, changed=False).json()
    # This process forgets at once; every process (this one too) again when the event arrives.
    parley.read_access.forget(change.discussion_id)
    await outbox.relay(parley, entry)
    action = "membership.add" if member else "membership.remove"
    await audit.record(parley.db, identity.user_id, action, f"discussion:{change.discussion_id}", {"user": user_id})
    return change.json()


def stage(session: AsyncSession, event: membership.AccessEvent, actor: dict[str, str] | None) -> OutboxEntry:
    """The access event, in the transaction of the change it tells (app/core/outbox.py)."""
    return outbox.stage(
        session, event.topic, event.event_type, discussion_id=event.discussion_id, user=actor, payload=event.payload
    )
