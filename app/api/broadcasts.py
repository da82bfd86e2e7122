"""Platform-wide broadcasts (API.md, "Presence, typing, broadcasts"; FR-032).

- `POST /api/broadcasts {"message", "level": "info"|"warning"|"critical", "ttl_s"?}`: role
  `admin`; 201 `{"id","message","level","created_at","expires_at"}`; fires `broadcast` on the
  broadcast topic (every stream connection, every server and transport, reads it), with that
  same object as payload and `discussion_id` null.
- `GET /api/broadcasts`: `{"broadcasts": [...]}`, the unexpired ones, newest first, so a user
  who connects within a broadcast's lifetime still sees it (clients dedupe by `id`).
Expired rows are deleted when the next broadcast is posted, so the table stays small.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints
from quart import Blueprint
from sqlmodel import col, delete, select

from app.api.discussions import StrictBody
from app.core.services import services
from app.domain import audit
from app.domain.models import Broadcast, utcnow
from app.domain.roles import ADMIN, require_role
from app.errors import Forbidden
from app.log import topics
from app.log.events import rfc3339
from app.web.contract import documented
from app.web.requests import caller, json_body
from app.web.wire import BroadcastOut, Shape

blueprint = Blueprint("broadcasts", __name__)

DEFAULT_TTL_S = 3600
MAX_TTL_S = 7 * 24 * 3600
MAX_ACTIVE_LISTED = 50


class NewBroadcast(StrictBody):
    model_config = ConfigDict(strict=True, extra="forbid")
    # No NUL: PostgreSQL text cannot hold it (a 500 otherwise).
    message: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000, pattern=r"^[^\x00]*$")
    ]
    level: Literal["info", "warning", "critical"] = "info"
    ttl_s: Annotated[int, Field(ge=1, le=MAX_TTL_S)] = DEFAULT_TTL_S


class BroadcastList(Shape):
    broadcasts: list[BroadcastOut] = Field(description="the unexpired ones, newest first")


def broadcast_json(broadcast: Broadcast) -> dict[str, Any]:
    return {
        "id": broadcast.id,
        "message": broadcast.message,
        "level": broadcast.level,
        "created_at": rfc3339(broadcast.created_at),
        "expires_at": rfc3339(broadcast.expires_at),
    }


@blueprint.post("/api/broadcasts")
@documented(
    "Broadcast a message to everyone connected",
    description="Role `admin`. `ttl_s` (default 3600): how long it is listed for newcomers.",
    body=NewBroadcast,
    response=BroadcastOut,
    status=201,
    errors=[(Forbidden, "role_required")],
    roles=["admin"],
    fires=["broadcast"],
)
async def post_broadcast() -> tuple[dict[str, Any], int]:
    identity = await caller()
    require_role(identity, ADMIN)
    new = await json_body(NewBroadcast)
    parley = services()
    now = utcnow()
    broadcast = Broadcast(
        id=secrets.token_urlsafe(9),
        message=new.message,
        level=new.level,
        created_by=identity.user_id,
        created_at=now,
        expires_at=now + timedelta(seconds=new.ttl_s),
    )
    async with parley.db.session() as session:
        await session.exec(delete(Broadcast).where(col(Broadcast.expires_at) <= now))
        session.add(broadcast)
        await session.commit()
    body = broadcast_json(broadcast)
    await parley.publish(topics.BROADCAST, "broadcast", discussion_id=None, user=identity.public, payload=body)
    await audit.record(
        services().db, identity.user_id, "broadcast.send", f"broadcast:{broadcast.id}", {"level": broadcast.level}
    )
    return body, 201


@blueprint.get("/api/broadcasts")
@documented("The broadcasts still live", response=BroadcastList)
async def active_broadcasts() -> dict[str, Any]:
    await caller()
    async with services().db.session() as session:
        rows = await session.exec(
            select(Broadcast)
            .where(col(Broadcast.expires_at) > utcnow())
            .order_by(col(Broadcast.created_at).desc(), col(Broadcast.id))
            .limit(MAX_ACTIVE_LISTED)
        )
        return {"broadcasts": [broadcast_json(b) for b in rows.all()]}
