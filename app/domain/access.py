"""Who may see what (NFR-014). Public discussions: every authenticated user. Private: the
creator and members only, and to anyone else they do not exist (404, never 403)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth import Identity
from app.domain.models import Discussion, DiscussionMember
from app.errors import NotFound
from app.infra.db import Database

MAX_ID_CHARS = 64


async def readable_discussion(session: AsyncSession, identity: Identity, discussion_id: str) -> Discussion:
    not_found = NotFound(f"no discussion {discussion_id[:MAX_ID_CHARS]!r}")
    if not discussion_id or len(discussion_id) > MAX_ID_CHARS:
        raise not_found
    discussion = await session.get(Discussion, discussion_id)
    if discussion is None:
        raise not_found
    if discussion.visibility == "private" and discussion.created_by != identity.user_id:
        member = await session.exec(
            select(DiscussionMember).where(
                DiscussionMember.discussion_id == discussion_id, DiscussionMember.user_id == identity.user_id
            )
        )
        if member.first() is None:
            raise not_found
    return discussion


@dataclass(frozen=True, slots=True)
class _Readers:
    visibility: str
    created_by: str
    members: frozenset[str]

    def admit(self, user_id: str) -> bool:
        return self.visibility != "private" or user_id == self.created_by or user_id in self.members


class ReadAccessCache:
    """Read access for stream connects without a database round trip each time.

    Safe to cache: a discussion's visibility, creator and members are fixed when it is created
    (the API has no call that changes them) and discussions are never removed. Only existing
    discussions are cached, so unknown ids cannot fill it; it keeps the `max_entries` most
    recently used. A reconnect storm after a restart then costs the database once per
    discussion, not once per client.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: OrderedDict[str, _Readers] = OrderedDict()
        self._max = max_entries
        # Reads in flight, so that a crowd connecting to one uncached discussion at once waits
        # for one database read instead of each making its own.
        self._loading: dict[str, asyncio.Task[_Readers]] = {}

    def clear(self) -> None:
        """Forget every entry: an account deletion changed creators and members."""
        self._entries.clear()

    async def check(self, db: Database, identity: Identity, discussion_id: str) -> None:
        readers = self._entries.get(discussion_id)
        if readers is None:
            readers = await self._load(db, discussion_id)
        else:
            self._entries.move_to_end(discussion_id)
        if not readers.admit(identity.user_id):
            raise NotFound(f"no discussion {discussion_id[:MAX_ID_CHARS]!r}")

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
        if loading.cancelled() or loading.exception() is not None:
            return  # not cached: the next connect asks again
        self._entries[discussion_id] = loading.result()
        if len(self._entries) > self._max:
            self._entries.popitem(last=False)

    @staticmethod
    async def _read(db: Database, discussion_id: str) -> _Readers:
        """Who may read the discussion; the same answer whoever asks (NotFound if it does not exist)."""
        if not discussion_id or len(discussion_id) > MAX_ID_CHARS:
            raise NotFound(f"no discussion {discussion_id[:MAX_ID_CHARS]!r}")
        async with db.session() as session:
            discussion = await session.get(Discussion, discussion_id)
            if discussion is None:
                raise NotFound(f"no discussion {discussion_id[:MAX_ID_CHARS]!r}")
            members = await session.exec(
                select(col(DiscussionMember.user_id)).where(DiscussionMember.discussion_id == discussion_id)
            )
            return _Readers(discussion.visibility, discussion.created_by, frozenset(members.all()))
