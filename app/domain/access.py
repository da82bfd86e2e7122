"""Who may read what (NFR-014): the one read-access rule, for REST, streams and notifications.

Public discussions: every authenticated user. Private: the creator and the members only, and to
anyone else they do not exist (404, never 403). `may_read` is the rule; everything else here
only gathers its facts:

- `readable_discussion` (REST: one caller, one discussion, a fresh database read);
- `readers_among` (notifications: which of these users may read it, one query);
- `ReadAccessCache` (stream connects: cached per discussion, forgotten on membership changes).

Membership changes (app/domain/membership.py) fire `access_granted` / `access_revoked` on the
member's user topic; every process's hub hands them to `ReadAccessCache.forget`
(app/core/access_watch.py), so a cache never outlives a change by more than the log's delivery.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Collection, Container
from dataclasses import dataclass
from functools import partial

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth import Identity
from app.domain.models import Discussion, DiscussionMember
from app.errors import NotFound
from app.infra.db import Database

MAX_ID_CHARS = 64


def may_read(visibility: str, created_by: str, members: Container[str], user_id: str) -> bool:
    """The rule. `members` need only hold the members among the users asked about."""
    return visibility != "private" or user_id == created_by or user_id in members


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
    candidates = list(dict.fromkeys(user_ids))
    members: set[str] = set()
    if discussion.visibility == "private" and candidates:
        rows = await session.exec(
            select(DiscussionMember.user_id).where(
                DiscussionMember.discussion_id == discussion.id, col(DiscussionMember.user_id).in_(candidates)
            )
        )
        members = set(rows.all())
    return [u for u in candidates if may_read(discussion.visibility, discussion.created_by, members, u)]


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

    def admit(self, user_id: str) -> bool:
        return may_read(self.visibility, self.created_by, self.members, user_id)


class ReadAccessCache:
    """Read access for stream connects without a database round trip each time.

    A reconnect storm after a restart then costs the database once per discussion, not once
    per client. Correct while membership changes: each change fires an event that every
    process's hub passes to `forget` (app/core/access_watch.py), and an entry older than
    `max_age_s` is read again anyway, which bounds the cost of an event lost with the log
    (a Redis flush). Only existing discussions are cached, so unknown ids cannot fill it; it
    keeps the `max_entries` most recently used.
    """

    def __init__(self, max_entries: int = 10_000, max_age_s: float = 60.0) -> None:
        self._entries: OrderedDict[str, _Readers] = OrderedDict()
        self._max = max_entries
        self._max_age_s = max_age_s
        # Reads in flight, so that a crowd connecting to one uncached discussion at once waits
        # for one database read instead of each making its own.
        self._loading: dict[str, asyncio.Task[_Readers]] = {}
        # Reads in flight that started before a change: their answer is not cached.
        self._outdated: set[str] = set()

    def forget(self, discussion_id: str) -> None:
        """Its readers changed: the next check reads them again."""
        self._entries.pop(discussion_id, None)
        if discussion_id in self._loading:
            self._outdated.add(discussion_id)

    def clear(self) -> None:
        """Forget every entry (an account deletion changed creators and members)."""
        self._entries.clear()
        self._outdated.update(self._loading)

    async def check(self, db: Database, identity: Identity, discussion_id: str) -> None:
        readers = self._entries.get(discussion_id)
        if readers is None or time.monotonic() - readers.loaded_at > self._max_age_s:
            readers = await self._load(db, discussion_id)
        else:
            self._entries.move_to_end(discussion_id)
        if not readers.admit(identity.user_id):
            raise not_found(discussion_id)

    async def _load(self, db: Database, discussion_id: str) -> _Readers:
        # The read runs as its own task: a caller that goes away must not cancel it for others.
        loading = self._loading.get(discussion_id)
        if loading is None:
            loading = asyncio.get_running_loop().create_task(self._read(db, discussion_id))
            self._loading[discussion_id] = loading
            loading.add_done_callback(partial(self._loaded, discussion_id))
        return await asyncio.shield(loading)

    def _loaded(self, discussion_id: str, loading: asyncio.Task[_Readers]) -> None:
        del self._loading[discussion_id]
        if discussion_id in self._outdated:
            self._outdated.discard(discussion_id)
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
        async with db.session() as session:
            discussion = await find_discussion(session, discussion_id)
            members = await session.exec(
                select(col(DiscussionMember.user_id)).where(DiscussionMember.discussion_id == discussion_id)
            )
            return _Readers(discussion.visibility, discussion.created_by, frozenset(members.all()), time.monotonic())
