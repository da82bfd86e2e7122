"""Discussions and follows (API.md, "Discussions and responses").

Responses are app/api/responses.py, members app/api/members.py; the queries and rules are in
`app.domain` (discussions, follows, access).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from quart import Blueprint

from app.core.services import services
from app.domain import audit, discussions, follows
from app.domain.access import readable_discussion
from app.domain.membership import MAX_MEMBERS
from app.errors import NotFound, RateLimited
from app.web.contract import documented
from app.web.requests import PageSize, caller, json_body, query_args
from app.web.wire import Activity, DiscussionOut, Shape, Timestamp

blueprint = Blueprint("discussions", __name__)

MAX_PAGE = 200

UserId = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class StrictBody(BaseModel):
    model_config = ConfigDict(strict=True)


class NewDiscussion(StrictBody):
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
    visibility: Literal["public", "private"] = "public"
    members: list[UserId] = Field(default_factory=list, max_length=MAX_MEMBERS)


class DiscussionsQuery(BaseModel):
    scope: Literal["public", "mine"] = Field(
        default="public", description="`public`: recent public discussions; `mine`: created, joined or responded to"
    )
    limit: PageSize = Field(default=50, ge=1, le=MAX_PAGE)
    before: str | None = Field(
        default=None, max_length=64, description="the id of the last discussion of the previous page"
    )


class DiscussionListed(DiscussionOut):
    participant_count: int = Field(ge=0, description="distinct people who responded")
    last_activity_at: Timestamp


class DiscussionList(Shape):
    discussions: list[DiscussionListed] = Field(description="newest activity first")


class DiscussionDetail(DiscussionOut):
    participant_count: int = Field(ge=0, description="who is connected to it now (FR-033)")


class FollowState(Shape):
    discussion_id: str
    following: bool


@blueprint.post("/api/discussions")
@documented("Create a discussion", body=NewDiscussion, response=DiscussionOut, status=201, errors=[RateLimited])
async def create_discussion() -> tuple[dict[str, Any], int]:
    identity = await caller()
    new = await json_body(NewDiscussion)
    await services().rate_limit.hit(identity.user_id, "discussion")
    async with services().db.session() as session:
        discussion, _ = await discussions.create(session, identity.user_id, new.title, new.visibility, new.members)
    if new.members:
        await audit.record(
            services().db, identity.user_id, "membership.set", f"discussion:{discussion.id}", {"members": new.members}
        )
    return discussions.discussion_json(discussion), 201


@blueprint.get("/api/discussions")
@documented(
    "Recent public discussions, or the caller's own",
    query=DiscussionsQuery,
    response=DiscussionList,
)
async def list_discussions() -> dict[str, Any]:
    """`?scope=public` (default): recent public discussions. `?scope=mine`: those the caller
    created, is a member of, or responded to (however posted: page, API, curl) and can still
    read. Newest activity first; `before=<discussion id>` continues after that discussion.
    `participant_count` here is the number of distinct people who responded."""
    identity = await caller()
    wanted = query_args(DiscussionsQuery)
    async with services().db.read_session() as session:
        listed = await discussions.listing(session, identity.user_id, wanted.scope, wanted.limit, wanted.before)
    return {"discussions": listed}


@blueprint.get("/api/discussions/<discussion_id>")
@documented("A discussion, with who is here now", response=DiscussionDetail, errors=[NotFound])
async def get_discussion(discussion_id: str) -> dict[str, Any]:
    identity = await caller()
    parley = services()
    # From the read-access cache: no database read in the common case (issue 13). Its fields
    # are those only a membership change or an account deletion changes, which it is told of.
    card = await parley.read_access.readable(parley.db, identity, discussion_id)
    # Who is here now (FR-033), from the same store as GET .../presence.
    here = await parley.presence.snapshot(discussion_id)
    return {**card, "participant_count": len(here.participants)}


@blueprint.put("/api/discussions/<discussion_id>/follow")
@documented("Follow a discussion", response=FollowState, errors=[NotFound, RateLimited])
async def follow(discussion_id: str) -> dict[str, Any]:
    identity = await caller()
    await services().rate_limit.hit(identity.user_id, "follow")
    async with services().db.session() as session:
        await readable_discussion(session, identity, discussion_id)
        await follows.follow(session, identity.user_id, discussion_id)
    return {"discussion_id": discussion_id, "following": True}


@blueprint.delete("/api/discussions/<discussion_id>/follow")
@documented("Stop following a discussion", response=FollowState, errors=[NotFound, RateLimited])
async def unfollow(discussion_id: str) -> dict[str, Any]:
    identity = await caller()
    await services().rate_limit.hit(identity.user_id, "follow")
    async with services().db.session() as session:
        await readable_discussion(session, identity, discussion_id)
        await follows.unfollow(session, identity.user_id, discussion_id)
    return {"discussion_id": discussion_id, "following": False}


@blueprint.get("/api/me/follows")
@documented("The discussions the caller follows, with unread counts", response=list[Activity])
async def my_follows() -> list[dict[str, Any]]:
    identity = await caller()
    async with services().db.read_session() as session:
        return await follows.followed_by(session, identity.user_id)
