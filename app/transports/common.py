"""What every transport does before opening a session: authenticate and authorize."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from redis.exceptions import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError

from app.auth import Identity
from app.core.services import Services, services
from app.core.session import MAX_DISCUSSIONS_PER_CONNECTION, StreamSession
from app.core.stream_slots import TooManyStreams
from app.errors import InvalidField, NotFound
from app.web.requests import caller, refuse_unstorable

# A backing service unreachable for now (Redis, the database, a socket): a client should come
# back later, and every transport must tell it so in a way it acts on (see `sse_wire.retry_later`).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (RedisError, OperationalError, InterfaceError, OSError)

# What opening any stream can answer besides 401 and 422 (`app.web.contract`).
STREAM_ERRORS = (NotFound, TooManyStreams)


class StreamQuery(BaseModel):
    """The query string of `/stream` and `/ws`."""

    discussion: list[str] = Field(
        default_factory=list,
        max_length=MAX_DISCUSSIONS_PER_CONNECTION,
        description="a discussion to read (repeat for several); the caller's own notifications and the "
        "broadcasts come anyway",
    )
    last_event_id: str | None = Field(
        default=None, description="resume after this cursor (a page that stored it; browsers send `Last-Event-ID`)"
    )


class SseQuery(StreamQuery):
    """The query string of `/stream`: `/ws` plus the heartbeat's form."""

    heartbeat: Literal["comment", "event"] = Field(
        default="comment",
        description="`event`: start with a `hello` event (`heartbeat_s`, `expires_in_s`) and send each heartbeat as a "
        "`heartbeat` event, which EventSource can see (it cannot see `:` comments), so a client can tell a silently "
        "dropped connection by a deadline (FR-022) and a buffering proxy by a missing first event (FR-026)",
    )


async def authorized_session(discussion_ids: list[str]) -> tuple[Services, StreamSession]:
    """A session for the caller of this Quart request or WebSocket: 401 without a valid token."""
    identity = await caller(remember_now=False)
    parley = services()
    return parley, await session_for(parley, identity, discussion_ids)


async def session_for(parley: Services, identity: Identity, discussion_ids: list[str]) -> StreamSession:
    """A session for `identity` on these discussions: 422 for too many, 404 for one that does
    not exist or that the caller may not read (NFR-014). Every transport opens sessions here."""
    if len(discussion_ids) > MAX_DISCUSSIONS_PER_CONNECTION:
        raise InvalidField(f"discussion: at most {MAX_DISCUSSIONS_PER_CONNECTION} per connection")
    refuse_unstorable(discussion_ids, "discussion")
    for discussion_id in dict.fromkeys(discussion_ids):
        await parley.read_access.check(parley.db, identity, discussion_id)
    return parley.node.open_session(identity, discussion_ids, access_checked=True)
