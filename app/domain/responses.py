"""Responses: reading a thread, and the checks and rows of posting, editing and deleting.

The REST handlers (app/api/responses.py) own the transaction, because a response commits with
its stances (app/analysis/store.py) and its event (app/core/outbox.py), both above this layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy import insert as sa_insert
from sqlalchemy import update as sa_update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth import Identity
from app.domain.access import readable_discussion
from app.domain.follows import mark_read
from app.domain.models import Discussion, Proposition, Response, User, utcnow
from app.errors import Conflict, Forbidden, InvalidField, NotFound
from app.log.events import rfc3339


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


async def author_name(session: AsyncSession, user_id: str) -> str:
    user = await session.get(User, user_id)
    return user.name if user is not None else user_id


async def page(session: AsyncSession, user_id: str, discussion_id: str, after: int, limit: int) -> list[dict[str, Any]]:
    """Responses after `after`, oldest first, as REST answers them; the reader (a follower)
    has now read up to the last one."""
    rows = await session.exec(
        select(Response, User.name)
        .join(User, col(User.id) == col(Response.author_id))
        .where(Response.discussion_id == discussion_id, col(Response.id) > after)
        .order_by(col(Response.id))
        .limit(limit)
    )
    responses = [response_json(response, name) for response, name in rows.all()]
    if responses:
        await mark_read(session, user_id, discussion_id, int(responses[-1]["id"]))
    return responses


async def by_client_id(session: AsyncSession, author_id: str, client_id: str) -> Response | None:
    rows = await session.exec(select(Response).where(Response.author_id == author_id, Response.client_id == client_id))
    return rows.first()


async def parent_in(session: AsyncSession, discussion_id: str, parent_id: int | None) -> int | None:
    """The parent's id, checked to be a response of this discussion (422 otherwise)."""
    if parent_id is None:
        return None
    parent = await session.get(Response, parent_id)
    if parent is None or parent.discussion_id != discussion_id:
        raise InvalidField("parent_id: no such response in this discussion")
    return parent.id


async def check_propositions(session: AsyncSession, discussion_id: str, stances: Mapping[str, str]) -> None:
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


_RESPONSES = Response.__table__  # type: ignore[attr-defined]
_DISCUSSIONS = Discussion.__table__  # type: ignore[attr-defined]
# Built once, run with parameters: a statement built per call with `.values(...)` costs its
# construction and its cache key each time (~3 % of a post). Also compiled for the SQLite
# thread by app/api/posting.py.
RESPONSE_COLUMNS = (
    "discussion_id",
    "author_id",
    "body",
    "parent_id",
    "stances",
    "client_id",
    "created_at",
    "edited_at",
    "deleted",
    "deleted_at",
)
INSERT_RESPONSE = sa_insert(_RESPONSES).returning(_RESPONSES.c.id)
TOUCH_DISCUSSION = (
    sa_update(_DISCUSSIONS)
    .where(_DISCUSSIONS.c.id == bindparam("discussion_id"))
    .values(last_activity_at=bindparam("last_activity_at"))
)


def response_row(response: Response) -> dict[str, Any]:
    """`INSERT_RESPONSE`'s parameters."""
    return {column: getattr(response, column) for column in RESPONSE_COLUMNS}


def touch_row(response: Response) -> dict[str, Any]:
    """`TOUCH_DISCUSSION`'s parameters: the discussion's last activity is the new response."""
    return {"discussion_id": response.discussion_id, "last_activity_at": response.created_at}


async def readable_response(session: AsyncSession, identity: Identity, response_id: int) -> tuple[Response, Discussion]:
    """The response and its discussion, if the caller may read that discussion (404 otherwise)."""
    response = await session.get(Response, response_id)
    if response is None:
        raise NotFound(f"no response {response_id!r}")
    try:
        discussion = await readable_discussion(session, identity, response.discussion_id)
    except NotFound:
        raise NotFound(f"no response {response_id!r}") from None
    return response, discussion


def edit(response: Response, identity: Identity, body: str) -> None:
    """Its author only (403), and not once deleted (409 `response_deleted`)."""
    if response.author_id != identity.user_id:
        raise Forbidden("only the author may edit a response")
    if response.deleted:
        raise Conflict("the response was deleted", code="response_deleted")
    response.body = body
    response.edited_at = utcnow()


def delete(response: Response, discussion: Discussion, identity: Identity) -> bool:
    """Soft-delete it (its author or the discussion's creator, 403 otherwise); False when it
    already was deleted (not an error, nothing changes)."""
    if identity.user_id not in (response.author_id, discussion.created_by):
        raise Forbidden("only the author or the discussion's creator may delete a response")
    if response.deleted:
        return False
    response.deleted = True
    response.deleted_at = utcnow()
    return True
