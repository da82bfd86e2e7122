"""Responses: read a thread, post, edit, delete (API.md, "Discussions and responses").

The rules and queries are `app.domain.responses`; a handler here owns the transaction, because
a response commits with its stances (app/analysis/store.py) and its event (app/core/outbox.py).
A new response's transaction is `app.api.posting` (on SQLite, one trip to the SQLite thread).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints
from quart import Blueprint
from redis.exceptions import RedisError
from sqlmodel.ext.asyncio.session import AsyncSession

from app.api import posting
from app.api.discussions import StrictBody
from app.auth import Identity
from app.core import outbox
from app.core.services import services
from app.domain import audit
from app.domain import responses as domain
from app.domain.access import readable_discussion
from app.domain.models import OutboxEntry, Response
from app.errors import Conflict, Forbidden, InvalidField, NotFound, RateLimited
from app.infra.db import Database
from app.log import topics
from app.web.contract import documented
from app.web.requests import NumericId, PageSize, caller, json_body, numeric_id, numeric_id_in_path, query_args
from app.web.wire import ResponseOut, Shape

blueprint = Blueprint("responses", __name__)
log = logging.getLogger(__name__)

MAX_BODY_CHARS = 10_000
DEFAULT_PAGE = 50
MAX_PAGE = 200

Stance = Literal["agree", "disagree", "pass"]
Body = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_BODY_CHARS)]


class NewResponse(StrictBody):
    body: Body
    parent_id: NumericId | None = None
    stances: dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], Stance] | None = Field(
        default=None, max_length=100
    )
    client_id: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None


class ResponseEdit(StrictBody):
    body: Body


class ResponsesQuery(BaseModel):
    after: NumericId | None = Field(default=None, description="a response id: only those after it")
    limit: PageSize = Field(default=DEFAULT_PAGE, ge=1, le=MAX_PAGE)


class ResponsePage(Shape):
    responses: list[ResponseOut] = Field(description="oldest first")
    cursor: str = Field(description="the event log's position before the read: stream from it to miss nothing")


def _stage_event(
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


@blueprint.get("/api/discussions/<discussion_id>/responses")
@documented("A discussion's responses, oldest first", query=ResponsesQuery, response=ResponsePage, errors=[NotFound])
async def list_responses(discussion_id: str) -> dict[str, Any]:
    identity = await caller()
    page = query_args(ResponsesQuery)
    parley = services()
    # The log position *before* the read: a client that resumes from it misses nothing the
    # read did not already show (and sees at most a few events twice, deduplicated by id).
    cursor = await parley.log.head()
    async with parley.db.session() as session:
        await readable_discussion(session, identity, discussion_id)
        responses = await domain.page(session, identity.user_id, discussion_id, numeric_id(page.after) or 0, page.limit)
    return {"responses": responses, "cursor": str(cursor)}


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
    parley = services()
    await parley.rate_limit.hit(identity.user_id)
    # Read access from the cache every process keeps exact on membership changes (as stream
    # connects and GET of the discussion do): no database read (issue 13).
    await parley.read_access.check(parley.db, identity, discussion_id)
    stances = dict(new.stances) if new.stances else {}
    try:
        parent_id = await _checked_references(parley.db, discussion_id, numeric_id(new.parent_id), stances)
    except InvalidField:
        # A retry answers the first response even if its parent or propositions are no
        # longer valid, as when the repeat was looked up first.
        earlier = await _earlier(parley.db, identity, new.client_id)
        if earlier is None:
            raise
        return earlier, 200
    response = Response(
        discussion_id=discussion_id,
        author_id=identity.user_id,
        body=new.body,
        parent_id=parent_id,
        stances=stances or None,
        client_id=new.client_id,
    )
    # The response, the stances it carries and its event are stored together, or none is.
    stored = await posting.store(parley.db, identity, response, stances)
    if stored is None:
        # The same client_id again (a retry, or a race with another request): the first wins.
        earlier = await _earlier(parley.db, identity, new.client_id)
        if earlier is None:
            raise RuntimeError(f"posting to {discussion_id!r} broke a constraint other than client_id's")
        return earlier, 200
    # FR-021: posting ends the author's typing at once (before the post reaches anyone).
    await stop_typing(discussion_id, identity)
    await outbox.relay(parley, stored.event)
    return stored.body, 201


async def _checked_references(
    db: Database, discussion_id: str, parent_id: int | None, stances: Mapping[str, str]
) -> int | None:
    """The parent (if any) and the propositions of the stances (if any) must be this
    discussion's (422 otherwise); returns the parent's id. Most posts have neither: no read."""
    if parent_id is None and not stances:
        return None
    async with db.read_session() as session:
        checked_parent = await domain.parent_in(session, discussion_id, parent_id)
        await domain.check_propositions(session, discussion_id, stances)
    return checked_parent


async def _earlier(db: Database, identity: Identity, client_id: str | None) -> dict[str, Any] | None:
    """The caller's response already posted with this `client_id`, as answered then."""
    if client_id is None:
        return None
    async with db.read_session() as session:
        earlier = await domain.by_client_id(session, identity.user_id, client_id)
    return None if earlier is None else domain.response_json(earlier, identity.name)


async def stop_typing(discussion_id: str, identity: Identity) -> None:
    """After the commit a post has succeeded: presence being unreachable must not make it a
    503 (the client would retry a post that is already stored)."""
    try:
        await services().presence.stop_typing(discussion_id, identity)
    except (RedisError, OSError) as error:
        log.warning("could not end the typing of %s: %s", identity.user_id, error)


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
        response, _ = await domain.readable_response(session, identity, numeric_id_in_path(response_id, "response"))
        domain.edit(response, identity, edit.body)
        session.add(response)
        body = domain.response_json(response, identity.name)
        event = _stage_event(session, "response_edited", identity, body)
        await session.commit()
    await outbox.relay(services(), event)
    await audit.record(
        services().db, identity.user_id, "response.edit", f"response:{body['id']}", {"discussion": _discussion_of(body)}
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
        response, discussion = await domain.readable_response(
            session, identity, numeric_id_in_path(response_id, "response")
        )
        changed = domain.delete(response, discussion, identity)
        body = domain.response_json(response, await domain.author_name(session, response.author_id))
        if not changed:
            return body
        session.add(response)
        event = _stage_event(session, "response_deleted", identity, body)
        await session.commit()
    await outbox.relay(services(), event)
    details = {"discussion": _discussion_of(body), "author": body["author"]["id"]}
    await audit.record(services().db, identity.user_id, "response.delete", f"response:{body['id']}", details)
    return body


def _discussion_of(body: dict[str, Any]) -> str:
    return str(body["discussion_id"])
