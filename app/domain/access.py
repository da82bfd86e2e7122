"""Who may read what (NFR-014): the one read-access rule, for REST, streams and notifications.

Public discussions: every authenticated user. Private: the creator and the members only, and to
anyone else they do not exist (404, never 403). `may_read` is the rule; everything else here
only gathers its facts:

- `readable_discussion` (REST: one caller, one discussion, a fresh database read);
- `readers_among`, `readers_in` (notifications: which of these users may read it, one query);
- `ReadAccessCache` (stream connects, `GET /api/discussions/{id}`, posting a response: cached
  per discussion with its own fields, forgotten on membership changes and account deletions).

Membership changes (app/domain/membership.py) fire `access_granted` / `access_revoked` on the
member's user topic; every process's hub hands them to `ReadAccessCache.forget`
(app/core/access_watch.py), so a cache never outlives a change by more than the log's delivery.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Collection, Container, Mapping
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth import Identity
from app.domain.models import Discussion, DiscussionMember
from app.errors import NotFound
from app.infra.db import Database
from app.log.events import rfc3339

MAX_ID_CHARS = 64


def may_read(visibility: str, created_by: str, members: Container[str], user_id: str) -> bool:
    """The rule. `members` need only hold the members among the users asked about."""
    return visibility != "private" or user_id == created_by or user_id in members


def discussion_json(discussion: Discussion) -> dict[str, Any]:
    """A discussion as the API shows it (`DiscussionOut`). Only fields that never change but
    through what `ReadAccessCache` is told of (`created_by`: an account deletion), so a cached
    copy stays exact."""
    return {
        "id": discussion.id,
        "title": discussion.title,
        "visibility": discussion.visibility,
        "created_by": discussion.created_by,
        "created_at": rfc3339(discussion.created_at),
    }


def not_found(discussion_id: str) -> NotFound:
    return NotFound(f"no discussion {discussion_id[:MAX_ID_CHARS]!r}")


async def find_discussion(session: AsyncSession, discussion_id: str) -> Discussion:
    """The discussion, readable or not (404 if it does not exist or the id cannot be one)."""
    if not discussion_id or len(discussion_id) > MAX_ID_CHARS:
        raise not_found(discussion_id)
    discussion = await session.get(Discussion, discussion_id)
    if discussion is None:
        raise not_found(discussion_id)
    return discussion


async def readers_among(session: AsyncSession, discussion: Discussion, user_ids: Collection[str]) -> list[str]:
    """Those of `user_ids` (in their order) who may read `discussion`: one query at most."""
    return (await readers_in(session, [(discussion, user_ids)]))[discussion.id]


async def readers_in(
    session: AsyncSession, asked: Collection[tuple[Discussion, Collection[str]]]
) -> dict[str, list[str]]:
    """`readers_among` for many discussions at once, in one query at most (the notification
    worker's batch): discussion id -> those of its candidates who may read it."""
    wanted = [(discussion, list(dict.fromkeys(user_ids))) for discussion, user_ids in asked]
    private = {d.id: candidates for d, candidates in wanted if d.visibility == "private" and candidates}
    members: dict[str, set[str]] = {}
    if private:
        rows = await session.exec(
            select(DiscussionMember.discussion_id, DiscussionMember.user_id).where(
                col(DiscussionMember.discussion_id).in_(list(private)),
                col(DiscussionMember.user_id).in_({u for candidates in private.values() for u in candidates}),
            )
        )
        for discussion_id, user_id in rows.all():
            members.setdefault(discussion_id, set()).add(user_id)
    return {
        d.id: [u for u in candidates if may_read(d.visibility, d.created_by, members.get(d.id, set()), u)]
        for d, candidates in wanted
    }


async def can_read(session: AsyncSession, discussion: Discussion, user_id: str) -> bool:
    return bool(await readers_among(session, discussion, [user_id]))


async def readable_discussion(session: AsyncSession, identity: Identity, discussion_id: str) -> Discussion:
    """The discussion if the caller may read it; 404 otherwise (as if it did not exist)."""
    discussion = await find_discussion(session, discussion_id)
    if not await can_read(session, discussion, identity.user_id):
        raise not_found(discussion_id)
    return discussion


@dataclass(frozen=True, slots=True)
class _Readers:
    visibility: str
    created_by: str
    members: frozenset[str]
    loaded_at: float
    card: Mapping[str, Any]  # `discussion_json`, read-only: shared by every answer

    def admit(self, user_id: str) -> bool:
        return may_read(self.visibility, self.created_by, self.members, user_id)


class ReadAccessCache:
    """Read access (and the discussion's own fields) without a database round trip each time.

    A reconnect storm after a restart then costs the database once per discussion, not once
    per client, and `GET /api/discussions/{id}` none at all (issue 13). Correct while
    membership changes: the process that commits a change forgets at once (app/api/members.py,
    app/api/account.py), and each change fires an event that every process's hub passes to
    `forget` (app/core/access_watch.py), so another process is exact once the event reaches it.
    An entry older than `max_age_s` is read again anyway: that bounds the cost of an event lost
    with the log (a Redis flush), and the one change no event tells another process of: a
    deleted account's *public* discussions showing `created_by` as the deleted user (their
    private ones are in its `access_revoked` events). Only existing discussions are cached, so
    unknown ids cannot fill it; it keeps the `max_entries` most recently used.
    """

    def __init__(self, max_entries: int = 10_000, max_age_s: float = 60.0) -> None:
        self._entries: OrderedDict[str, _Readers] = OrderedDict()
        self._max = max_entries
        self._max_age_s = max_age_s
        # Reads in flight, so that a crowd connecting to one uncached discussion at once waits
        # for one database read instead of each making its own.
        self._loading: dict[str, asyncio.Task[_Readers]] = {}
        # Reads in flight that started before a change: taken out of `_loading` (a caller who
        # comes after the change starts a fresh read) and their answer is not cached.
        self._outdated: set[asyncio.Task[_Readers]] = set()

    def forget(self, discussion_id: str) -> None:
        """Its readers changed: the next check reads them again."""
        self._entries.pop(discussion_id, None)
        loading = self._loading.pop(discussion_id, None)
        if loading is not None:
            self._outdated.add(loading)

    def clear(self) -> None:
        """Forget every entry (an account deletion changed creators and members)."""
        self._entries.clear()
        self._outdated.update(self._loading.values())
        self._loading.clear()

    async def check(self, db: Database, identity: Identity, discussion_id: str) -> None:
        await self.readable(db, identity, discussion_id)

    async def readable(self, db: Database, identity: Identity, discussion_id: str) -> Mapping[str, Any]:
        """`discussion_json` of the discussion if the caller may read it; 404 otherwise."""
        readers = self._entries.get(discussion_id)
        if readers is None or time.monotonic() - readers.loaded_at > self._max_age_s:
            readers = await self._load(db, discussion_id)
        else:
            self._entries.move_to_end(discussion_id)
        if not readers.admit(identity.user_id):
            raise not_found(discussion_id)
        return readers.card

    async def _load(self, db: Database, discussion_id: str) -> _Readers:
        # The read runs as its own task: a caller that goes away must not cancel it for others.
        loading = self._loading.get(discussion_id)
        if loading is None:
            loading = asyncio.get_running_loop().create_task(self._read(db, discussion_id))
            self._loading[discussion_id] = loading
            loading.add_done_callback(partial(self._loaded, discussion_id))
        return await asyncio.shield(loading)

    def _loaded(self, discussion_id: str, loading: asyncio.Task[_Readers]) -> None:
        if self._loading.get(discussion_id) is loading:
            del self._loading[discussion_id]
        if loading in self._outdated:
            self._outdated.discard(loading)
            return
        if loading.cancelled() or loading.exception() is not None:
            return  # not cached: the next connect asks again
        self._entries[discussion_id] = loading.result()
        self._entries.move_to_end(discussion_id)
        if len(self._entries) > self._max:
            self._entries.popitem(last=False)

    @staticmethod
    async def _read(db: Database, discussion_id: str) -> _Readers:
        """Who may read the discussion; the same answer whoever asks (NotFound if it does not exist)."""
        async with db.read_session() as session:
            discussion = await find_discussion(session, discussion_id)
            members = await session.exec(
                select(col(DiscussionMember.user_id)).where(DiscussionMember.discussion_id == discussion_id)
            )
            return _Readers(
                discussion.visibility,
                discussion.created_by,
                frozenset(members.all()),
                time.monotonic(),
                MappingProxyType(discussion_json(discussion)),
            )
