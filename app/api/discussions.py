"""Discussions, their responses, and follows (API.md, "Discussions and responses")."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from quart import Blueprint
from redis.exceptions import RedisError
from sqlalchemy import and_, distinct, func, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.analysis import store as analysis_store
from app.auth import Identity
from app.core import outbox
from app.core.services import services
from app.domain import audit
from app.domain.access import readable_discussion
from app.domain.follows import unread_counts
from app.domain.models import Discussion, DiscussionMember, Follow, OutboxEntry, Proposition, Response, User, utcnow
from app.errors import Conflict, Forbidden, InvalidField, NotFound, RateLimited
from app.log import topics
from app.log.events import rfc3339
from app.web.contract import documented
from app.web.requests import NumericId, PageSize, caller, json_body, numeric_id, numeric_id_in_path, query_args
from app.web.wire import Activity, DiscussionOut, ResponseOut, Shape, Timestamp

blueprint = Blueprint("discussions", __name__)
log = logging.getLogger(__name__)

MAX_BODY_CHARS = 10_000
MAX_MEMBERS = 1_000
DEFAULT_PAGE = 50
MAX_PAGE = 200

UserId = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Stance = Literal["agree", "disagree", "pass"]


class StrictBody(BaseModel):
    model_config = ConfigDict(strict=True)


class NewDiscussion(StrictBody):
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
    visibility: Literal["public", "private"] = "public"
    members: list[UserId] = Field(default_factory=list, max_length=MAX_MEMBERS)


class NewResponse(StrictBody):
    body: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_BODY_CHARS)]
    parent_id: NumericId | None = None
    stances: dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], Stance] | None = Field(
        default=None, max_length=100
    )
    client_id: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None


class ResponseEdit(StrictBody):
    body: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_BODY_CHARS)]


class ResponsesQuery(BaseModel):
    after: NumericId | None = Field(default=None, description="a response id: only those after it")
    limit: PageSize = Field(default=DEFAULT_PAGE, ge=1, le=MAX_PAGE)


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


class ResponsePage(Shape):
    responses: list[ResponseOut] = Field(description="oldest first")
    cursor: str = Field(description="the event log's position before the read: stream from it to miss nothing")


class FollowState(Shape):
    discussion_id: str
    following: bool


def discussion_json(discussion: Discussion) -> dict[str, Any]:
    return {
        "id": discussion.id,
        "title": discussion.title,
        "visibility": discussion.visibility,
        "created_by": discussion.created_by,
        "created_at": rfc3339(discussion.created_at),
    }


def response_json(response: Response, author_name: str) -> dict[str, Any]:
    return {
        "id": str(response.id),
        "discussion_id": response.discussion_id,
        "author": {"id": response.author_id, "name": author_name},
        # A deleted response keeps its place in the thread but not its words.
        "body": "" if response.deleted else response.body,
        "parent_id": None if response.parent_id is None else str(response.parent_id),
        "stances": response.stances or {},
        "created_at": rfc3339(response.created_at),
        "edited_at": None if response.edited_at is None else rfc3339(response.edited_at),
        "deleted": response.deleted,
    }


async def _author_name(session: AsyncSession, user_id: str) -> str:
    user = await session.get(User, user_id)
    return user.name if user is not None else user_id


def _stage_response_event(
    session: AsyncSession, event_type: str, identity: Identity, payload_response: dict[str, Any]
) -> OutboxEntry:
    """The response's event, in the same transaction as the change (app/core/outbox.py): relay it
    after the commit. Committed together, so the event cannot be lost between the two."""
    discussion_id = payload_response["discussion_id"]
    return outbox.stage(
        session,
        topics.discussion(discussion_id),
        event_type,
        discussion_id=discussion_id,
        user=identity.public,
        payload={"response": payload_response},
    )


@blueprint.post("/api/discussions")
@documented("Create a discussion", body=NewDiscussion, response=DiscussionOut, status=201, errors=[RateLimited])
async def create_discussion() -> tuple[dict[str, Any], int]:
    identity = await caller()
    new = await json_body(NewDiscussion)
    await services().rate_limit.hit(identity.user_id, "discussion")
    discussion = Discussion(
        id=secrets.token_urlsafe(12), title=new.title, visibility=new.visibility, created_by=identity.user_id
    )
    async with services().db.session() as session:
        session.add(discussion)
        await session.flush()
        for member in sorted(set(new.members) - {identity.user_id}):
            session.add(DiscussionMember(discussion_id=discussion.id, user_id=member))
        await session.commit()
    if new.members:
        await audit.record(
            services().db, identity.user_id, "membership.set", f"discussion:{discussion.id}", {"members": new.members}
        )
    return discussion_json(discussion), 201


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
    listing = query_args(DiscussionsQuery)
    limit, before_id = listing.limit, listing.before
    me = identity.user_id
    query = select(Discussion)
    if listing.scope == "public":
        query = query.where(Discussion.visibility == "public")
    else:
        member_of = select(DiscussionMember.discussion_id).where(DiscussionMember.user_id == me)
        responded_to = select(Response.discussion_id).where(Response.author_id == me)
        query = query.where(
            or_(
                col(Discussion.created_by) == me,
                col(Discussion.id).in_(member_of),
                # A private discussion one responded to but was removed from is no longer theirs.
                and_(col(Discussion.visibility) == "public", col(Discussion.id).in_(responded_to)),
            )
        )
    async with services().db.session() as session:
        if before_id is not None:
            before = await session.get(Discussion, before_id[:64])
            if before is None:
                raise InvalidField("before: no such discussion")
            query = query.where(
                or_(
                    col(Discussion.last_activity_at) < before.last_activity_at,
                    and_(
                        col(Discussion.last_activity_at) == before.last_activity_at,
                        col(Discussion.id) < before.id,
                    ),
                )
            )
        rows = await session.exec(
            query.order_by(col(Discussion.last_activity_at).desc(), col(Discussion.id).desc()).limit(limit)
        )
        discussions = list(rows.all())
        counts: dict[str, int] = {}
        if discussions:
            grouped = await session.exec(
                select(Response.discussion_id, func.count(distinct(col(Response.author_id))))
                .where(col(Response.discussion_id).in_([d.id for d in discussions]))
                .group_by(col(Response.discussion_id))
            )
            counts = {discussion_id: int(count) for discussion_id, count in grouped.all()}
    return {
        "discussions": [
            {
                **discussion_json(d),
                "participant_count": counts.get(d.id, 0),
                "last_activity_at": rfc3339(d.last_activity_at),
            }
            for d in discussions
        ]
    }


@blueprint.get("/api/discussions/<discussion_id>")
@documented("A discussion, with who is here now", response=DiscussionDetail, errors=[NotFound])
async def get_discussion(discussion_id: str) -> dict[str, Any]:
    identity = await caller()
    parley = services()
    async with parley.db.session() as session:
        discussion = await readable_discussion(session, identity, discussion_id)
    # Who is here now (FR-033), from the same store as GET .../presence.
    here = await parley.presence.snapshot(discussion_id)
    return {**discussion_json(discussion), "participant_count": len(here.participants)}


@blueprint.get("/api/discussions/<discussion_id>/responses")
@documented("A discussion's responses, oldest first", query=ResponsesQuery, response=ResponsePage, errors=[NotFound])
async def list_responses(discussion_id: str) -> dict[str, Any]:
    identity = await caller()
    page = query_args(ResponsesQuery)
    after = numeric_id(page.after) or 0
    limit = page.limit
    parley = services()
    # The log position *before* the read: a client that resumes from it misses nothing the
    # read did not already show (and sees at most a few events twice, deduplicated by id).
    cursor = await parley.log.head()
    async with parley.db.session() as session:
        await readable_discussion(session, identity, discussion_id)
        rows = await session.exec(
            select(Response, User.name)
            .join(User, col(User.id) == col(Response.author_id))
            .where(Response.discussion_id == discussion_id, col(Response.id) > after)
            .order_by(col(Response.id))
            .limit(limit)
        )
        responses = [response_json(response, name) for response, name in rows.all()]
        if responses:
            await _mark_read(session, identity.user_id, discussion_id, int(responses[-1]["id"]))
    return {"responses": responses, "cursor": str(cursor)}


async def _mark_read(session: AsyncSession, user_id: str, discussion_id: str, response_id: int) -> None:
    follow = await session.get(Follow, (user_id, discussion_id))
    if follow is not None and follow.last_read_response_id < response_id:
        follow.last_read_response_id = response_id
        await session.commit()


@blueprint.post("/api/discussions/<discussion_id>/responses")
@documented(
    "Post a response",
    description=(
        "A repeated `client_id` from the same user answers the first response (200) and fires nothing. "
        "`stances` maps proposition ids of this discussion to agree/disagree/pass; the author's latest "
        "stance per proposition counts (an id that is unknown or of another discussion: 422 `unknown_proposition`)."
    ),
    body=NewResponse,
    response=ResponseOut,
    status=201,
    also={200: ResponseOut},
    errors=[NotFound, RateLimited, (InvalidField, "unknown_proposition")],
    fires=["response_posted"],
)
async def post_response(discussion_id: str) -> tuple[dict[str, Any], int]:
    identity = await caller()
    new = await json_body(NewResponse)
    await services().rate_limit.hit(identity.user_id)
    async with services().db.session() as session:
        discussion = await readable_discussion(session, identity, discussion_id)
        if new.client_id is not None:
            earlier = await _by_client_id(session, identity.user_id, new.client_id)
            if earlier is not None:
                return response_json(earlier, identity.name), 200
        parent_id = None
        if new.parent_id is not None:
            parent = await session.get(Response, numeric_id(new.parent_id))
            if parent is None or parent.discussion_id != discussion_id:
                raise InvalidField("parent_id: no such response in this discussion")
            parent_id = parent.id
        stances = dict(new.stances) if new.stances else {}
        await _check_propositions(session, discussion_id, stances)
        response = Response(
            discussion_id=discussion_id,
            author_id=identity.user_id,
            body=new.body,
            parent_id=parent_id,
            stances=stances or None,
            client_id=new.client_id,
        )
        session.add(response)
        discussion.last_activity_at = response.created_at
        session.add(discussion)
        try:
            # The response, the stances it carries and its event are stored together, or none is.
            await session.flush()  # the response's id, for its stances and its event
            await analysis_store.record_stances(
                session,
                services().db.engine.dialect.name,
                discussion_id=discussion_id,
                user_id=identity.user_id,
                response_id=response.id or 0,
                stances=stances,
            )
            body = response_json(response, identity.name)
            event = _stage_response_event(session, "response_posted", identity, body)
            await session.commit()
        except IntegrityError:
            # The same client_id raced in from another request: the first one wins.
            await session.rollback()
            earlier = await _by_client_id(session, identity.user_id, new.client_id or "")
            if earlier is None:
                raise
            return response_json(earlier, identity.name), 200
    # FR-021: posting ends the author's typing at once (before the post reaches anyone).
    await stop_typing(discussion_id, identity)
    await outbox.relay(services(), event)
    return body, 201


async def stop_typing(discussion_id: str, identity: Identity) -> None:
    """After the commit a post has succeeded: presence being unreachable must not make it a
    503 (the client would retry a post that is already stored)."""
    try:
        await services().presence.stop_typing(discussion_id, identity)
    except (RedisError, OSError) as error:
        log.warning("could not end the typing of %s: %s", identity.user_id, error)


async def _check_propositions(session: AsyncSession, discussion_id: str, stances: Mapping[str, str]) -> None:
    """Every stance must name a proposition of *this* discussion: 422 otherwise, whether the
    id is unknown or belongs to another discussion (the answer does not tell which, so it
    reveals nothing about other discussions)."""
    if not stances:
        return
    rows = await session.exec(
        select(Proposition.id).where(Proposition.discussion_id == discussion_id, col(Proposition.id).in_(list(stances)))
    )
    unknown = sorted(set(stances) - set(rows.all()))
    if unknown:
        raise InvalidField(f"stances.{unknown[0]}: no such proposition in this discussion", code="unknown_proposition")


async def _by_client_id(session: AsyncSession, author_id: str, client_id: str) -> Response | None:
    rows = await session.exec(select(Response).where(Response.author_id == author_id, Response.client_id == client_id))
    return rows.first()


async def _readable_response(
    session: AsyncSession, identity: Identity, response_id: str
) -> tuple[Response, Discussion]:
    response = await session.get(Response, numeric_id_in_path(response_id, "response"))
    if response is None:
        raise NotFound(f"no response {response_id!r}")
    try:
        discussion = await readable_discussion(session, identity, response.discussion_id)
    except NotFound:
        raise NotFound(f"no response {response_id!r}") from None
    return response, discussion


@blueprint.patch("/api/responses/<response_id>")
@documented(
    "Edit a response (its author only)",
    body=ResponseEdit,
    response=ResponseOut,
    errors=[Forbidden, NotFound, (Conflict, "response_deleted"), RateLimited],
    fires=["response_edited"],
)
async def edit_response(response_id: str) -> dict[str, Any]:
    identity = await caller()
    edit = await json_body(ResponseEdit)
    await services().rate_limit.hit(identity.user_id)
    async with services().db.session() as session:
        response, _ = await _readable_response(session, identity, response_id)
        if response.author_id != identity.user_id:
            raise Forbidden("only the author may edit a response")
        if response.deleted:
            raise Conflict("the response was deleted", code="response_deleted")
        response.body = edit.body
        response.edited_at = utcnow()
        session.add(response)
        body = response_json(response, identity.name)
        event = _stage_response_event(session, "response_edited", identity, body)
        await session.commit()
    await outbox.relay(services(), event)
    await audit.record(
        services().db,
        identity.user_id,
        "response.edit",
        f"response:{body['id']}",
        {"discussion": body["discussion_id"]},
    )
    return body


@blueprint.delete("/api/responses/<response_id>")
@documented(
    "Delete a response (its author or the discussion's creator)",
    description="A soft delete: the response keeps its place with an empty body. Deleting twice is not an error.",
    response=ResponseOut,
    errors=[Forbidden, NotFound, RateLimited],
    fires=["response_deleted"],
)
async def delete_response(response_id: str) -> dict[str, Any]:
    identity = await caller()
    await services().rate_limit.hit(identity.user_id)
    async with services().db.session() as session:
        response, discussion = await _readable_response(session, identity, response_id)
        if identity.user_id not in (response.author_id, discussion.created_by):
            raise Forbidden("only the author or the discussion's creator may delete a response")
        if response.deleted:
            return response_json(response, await _author_name(session, response.author_id))
        response.deleted = True
        response.deleted_at = utcnow()
        session.add(response)
        body = response_json(response, await _author_name(session, response.author_id))
        event = _stage_response_event(session, "response_deleted", identity, body)
        await session.commit()
    await outbox.relay(services(), event)
    await audit.record(
        services().db, identity.user_id, "response.delete", f"response:{body['id']}", _deletion_details(body)
    )
    return body


def _deletion_details(body: dict[str, Any]) -> dict[str, Any]:
    return {"discussion": body["discussion_id"], "author": body["author"]["id"]}


@blueprint.put("/api/discussions/<discussion_id>/follow")
@documented("Follow a discussion", response=FollowState, errors=[NotFound, RateLimited])
async def follow(discussion_id: str) -> dict[str, Any]:
    identity = await caller()
    await services().rate_limit.hit(identity.user_id, "follow")
    async with services().db.session() as session:
        await readable_discussion(session, identity, discussion_id)
        if await session.get(Follow, (identity.user_id, discussion_id)) is None:
            newest = await session.exec(select(func.max(Response.id)).where(Response.discussion_id == discussion_id))
            session.add(
                Follow(user_id=identity.user_id, discussion_id=discussion_id, last_read_response_id=newest.one() or 0)
            )
            try:
                await session.commit()
            except IntegrityError:  # followed twice at once: already following
                await session.rollback()
    return {"discussion_id": discussion_id, "following": True}


@blueprint.delete("/api/discussions/<discussion_id>/follow")
@documented("Stop following a discussion", response=FollowState, errors=[NotFound, RateLimited])
async def unfollow(discussion_id: str) -> dict[str, Any]:
    identity = await caller()
    await services().rate_limit.hit(identity.user_id, "follow")
    async with services().db.session() as session:
        await readable_discussion(session, identity, discussion_id)
        existing = await session.get(Follow, (identity.user_id, discussion_id))
        if existing is not None:
            await session.delete(existing)
            await session.commit()
    return {"discussion_id": discussion_id, "following": False}


@blueprint.get("/api/me/follows")
@documented("The discussions the caller follows, with unread counts", response=list[Activity])
async def my_follows() -> list[dict[str, Any]]:
    identity = await caller()
    async with services().db.session() as session:
        rows = await session.exec(
            select(Follow, Discussion)
            .join(Discussion, col(Discussion.id) == col(Follow.discussion_id))
            .where(Follow.user_id == identity.user_id)
            .order_by(col(Discussion.last_activity_at).desc())
        )
        followed = rows.all()
        unread = await unread_counts(session, col(Follow.user_id) == identity.user_id)
        follows = [
            {
                "discussion_id": discussion.id,
                "title": discussion.title,
                "unread_count": unread.get((discussion.id, identity.user_id), 0),
                "last_activity_at": rfc3339(discussion.last_activity_at),
            }
            for _, discussion in followed
        ]
    return follows
