"""`ReadAccessCache` on a real SQLite database: one read per uncached discussion however many
connect at once, the same answer whoever triggered that read, and unknown ids never cached.

Reads are counted with a `before_cursor_execute` listener on the real engine.
"""

from __future__ import annotations

import asyncio
import re
import time
from contextlib import AbstractContextManager
from typing import Any

import pytest

from app.auth import Identity
from app.domain.access import ReadAccessCache, discussion_json, find_discussion, readers_among
from app.domain.models import Discussion, DiscussionMember, User
from app.errors import NotFound
from app.infra.db import Database

from .support import statements_sent

WAIT_S = 10.0
READS_DISCUSSIONS = re.compile(r"^\s*SELECT\b.*\bFROM\s+discussions\b", re.IGNORECASE | re.DOTALL)


@pytest.fixture
def db(sqlite_db: Database) -> Database:
    return sqlite_db


def who(user_id: str) -> Identity:
    return Identity(user_id, user_id.title(), frozenset(), time.time() + 3600)


async def add_discussion(db: Database, discussion_id: str, creator: str, visibility: str, members: list[str]) -> None:
    async with db.session() as session:
        for user_id in {creator, *members}:
            if await session.get(User, user_id) is None:
                session.add(User(id=user_id, name=user_id.title()))
        await session.flush()
        session.add(Discussion(id=discussion_id, title="Trees", visibility=visibility, created_by=creator))
        await session.flush()
        for user_id in members:
            session.add(DiscussionMember(discussion_id=discussion_id, user_id=user_id))
        await session.commit()


def discussion_reads(db: Database) -> AbstractContextManager[list[str]]:
    """SELECTs on the discussions table, as the engine sends them."""
    return statements_sent(db, lambda statement: READS_DISCUSSIONS.search(statement) is not None)


async def check_all(cache: ReadAccessCache, db: Database, users: list[str], discussion_id: str) -> list[Any]:
    async with asyncio.timeout(WAIT_S):
        return await asyncio.gather(
            *(cache.check(db, who(user), discussion_id) for user in users), return_exceptions=True
        )


async def test_a_crowd_on_one_uncached_discussion_makes_one_read(db: Database) -> None:
    await add_discussion(db, "open", "alice", "public", [])
    cache = ReadAccessCache()
    with discussion_reads(db) as reads:
        outcomes = await check_all(cache, db, [f"user{i}" for i in range(100)], "open")
        assert outcomes == [None] * 100
        assert len(reads) == 1
        # Cached from now on.
        await cache.check(db, who("latecomer"), "open")
        assert len(reads) == 1


@pytest.mark.parametrize("first", ["mallory", "alice", "bob"])
async def test_a_private_discussion_admits_its_creator_and_members_whoever_loads_it(db: Database, first: str) -> None:
    """The outcome for each caller must not depend on who triggered the shared read."""
    await add_discussion(db, "secret", "alice", "private", ["bob", "carol"])
    cache = ReadAccessCache()
    crowd = [first] + ["alice", "bob", "carol", "mallory", "trudy"] * 10
    with discussion_reads(db) as reads:
        outcomes = await check_all(cache, db, crowd, "secret")
        assert len(reads) == 1
    for user, outcome in zip(crowd, outcomes, strict=True):
        if user in {"alice", "bob", "carol"}:
            assert outcome is None, (user, outcome)
        else:
            assert isinstance(outcome, NotFound), (user, outcome)
    # And again from the cache, in the other order.
    for user in ("mallory", "carol", "trudy", "alice", "bob"):
        if user in {"alice", "bob", "carol"}:
            await cache.check(db, who(user), "secret")
        else:
            with pytest.raises(NotFound):
                await cache.check(db, who(user), "secret")


async def test_an_unknown_discussion_is_not_found_for_everyone_and_not_cached(db: Database) -> None:
    await add_discussion(db, "other", "alice", "public", [])
    cache = ReadAccessCache()
    with discussion_reads(db) as reads:
        outcomes = await check_all(cache, db, [f"user{i}" for i in range(30)], "later")
        assert all(isinstance(outcome, NotFound) for outcome in outcomes), outcomes
        assert len(reads) == 1
        # Created afterwards: the next check reads again and admits.
        await add_discussion(db, "later", "alice", "public", [])
        await cache.check(db, who("user0"), "later")
        assert len(reads) == 2
    # Ids that cannot exist are refused without a read.
    with discussion_reads(db) as reads:
        for bad in ("", "x" * 65):
            with pytest.raises(NotFound):
                await cache.check(db, who("user0"), bad)
        assert reads == []


async def test_a_caller_going_away_does_not_cancel_the_read_for_the_others(db: Database) -> None:
    await add_discussion(db, "open", "alice", "public", [])
    cache = ReadAccessCache()
    async with asyncio.timeout(WAIT_S):
        tasks = [asyncio.create_task(cache.check(db, who(f"user{i}"), "open")) for i in range(5)]
        for _ in range(5):
            await asyncio.sleep(0)  # every task is now waiting on the read the first one started
        tasks[0].cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert outcomes[1:] == [None] * 4


async def set_member(db: Database, discussion_id: str, user_id: str, member: bool) -> None:
    async with db.session() as session:
        existing = await session.get(DiscussionMember, (discussion_id, user_id))
        if member and existing is None:
            session.add(DiscussionMember(discussion_id=discussion_id, user_id=user_id))
        elif not member and existing is not None:
            await session.delete(existing)
        await session.commit()


async def test_forget_reads_the_members_again(db: Database) -> None:
    await add_discussion(db, "secret", "alice", "private", ["bob"])
    cache = ReadAccessCache()
    await cache.check(db, who("bob"), "secret")
    await set_member(db, "secret", "bob", False)
    await set_member(db, "secret", "carol", True)
    await cache.check(db, who("bob"), "secret")  # cached: the cache has not been told
    cache.forget("secret")
    with pytest.raises(NotFound):
        await cache.check(db, who("bob"), "secret")
    await cache.check(db, who("carol"), "secret")


async def test_a_read_in_flight_when_forgotten_is_not_cached(db: Database) -> None:
    """A read that began before a change may hold the old members: its callers get that
    answer (they asked before the change), but the next check reads again."""
    await add_discussion(db, "secret", "alice", "private", ["bob"])
    cache = ReadAccessCache()
    with discussion_reads(db) as reads:
        loading = asyncio.create_task(cache.check(db, who("bob"), "secret"))
        await asyncio.sleep(0)  # the read has started
        cache.forget("secret")
        await loading
        await set_member(db, "secret", "bob", False)
        with pytest.raises(NotFound):
            await cache.check(db, who("bob"), "secret")
        assert len(reads) == 2


async def test_entries_expire(db: Database) -> None:
    await add_discussion(db, "secret", "alice", "private", ["bob"])
    cache = ReadAccessCache(max_age_s=0.05)
    await cache.check(db, who("bob"), "secret")
    await set_member(db, "secret", "bob", False)
    await asyncio.sleep(0.1)
    with pytest.raises(NotFound):
        await cache.check(db, who("bob"), "secret")


async def test_readers_among_is_the_same_rule(db: Database) -> None:
    """The notification side (`readers_among`) admits exactly whom the cache admits."""
    await add_discussion(db, "secret", "alice", "private", ["bob"])
    await add_discussion(db, "open", "alice", "public", [])
    cache = ReadAccessCache()
    users = ["mallory", "bob", "alice", "carol", "bob"]
    async with db.session() as session:
        for discussion_id in ("secret", "open"):
            discussion = await session.get(Discussion, discussion_id)
            assert discussion is not None
            readers = await readers_among(session, discussion, users)
            admitted = [
                u for u in dict.fromkeys(users) if not isinstance(await _outcome(cache, db, u, discussion_id), NotFound)
            ]
            assert readers == admitted
    assert readers == ["mallory", "bob", "alice", "carol"]


async def _outcome(cache: ReadAccessCache, db: Database, user: str, discussion_id: str) -> Any:
    try:
        return await cache.check(db, who(user), discussion_id)
    except NotFound as refused:
        return refused


async def test_the_discussion_s_fields_come_from_the_cache_exactly_as_read(db: Database) -> None:
    """`GET /api/discussions/{id}` answers `readable`: the fields `discussion_json` gives, read
    once, then without a database read."""
    await add_discussion(db, "open", "alice", "public", [])
    async with db.session() as session:
        expected = discussion_json(await find_discussion(session, "open"))
    cache = ReadAccessCache()
    with discussion_reads(db) as reads:
        assert dict(await cache.readable(db, who("bob"), "open")) == expected
        assert dict(await cache.readable(db, who("carol"), "open")) == expected
        assert len(reads) == 1
    shown = await cache.readable(db, who("bob"), "open")
    with pytest.raises(TypeError):  # shared by every answer: nobody may change it
        shown["title"] = "Elms"  # type: ignore[index]


async def test_a_caller_after_a_change_does_not_join_a_read_begun_before_it(db: Database) -> None:
    """A read in flight when membership changes may hold the readers from before the change: a
    caller who comes after `forget` starts a read of its own (review of issue 15's cache)."""
    await add_discussion(db, "secret", "alice", "private", ["bob"])
    cache = ReadAccessCache()
    with discussion_reads(db) as reads:
        before = asyncio.get_running_loop().create_task(cache.check(db, who("alice"), "secret"))
        await asyncio.sleep(0)  # its read has begun and is not finished
        assert not before.done()
        cache.forget("secret")  # the change's event arrives meanwhile
        await cache.check(db, who("bob"), "secret")
        await before
        assert len(reads) == 2
