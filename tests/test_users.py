"""`UserDirectory` on a real database: SQLite, and PostgreSQL when one is reachable.

Rows are read back with plain SQL on the same engine; the background writer (`run()`) is a real
task, and its writes are awaited by polling the table with a bounded deadline.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from app.auth import Identity
from app.domain.users import WRITE_BATCH, UserDirectory
from app.infra.db import Database

from .support import statements_sent

POLL_S = 5.0
OLD = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)


@pytest.fixture
def prefix() -> str:
    """User ids of this test's own (the PostgreSQL database is shared by the session)."""
    return f"u-{uuid.uuid4().hex[:8]}-"


def who(user_id: str, name: str) -> Identity:
    return Identity(user_id, name, frozenset(), time.time() + 3600)


async def rows(db: Database, prefix: str) -> dict[str, tuple[str, Any, Any]]:
    """id -> (name, created_at, updated_at) of the users whose id starts with `prefix`."""
    async with db.engine.connect() as connection:
        result = await connection.execute(
            text("SELECT id, name, created_at, updated_at FROM users WHERE id LIKE :p"), {"p": prefix + "%"}
        )
        return {row[0]: (row[1], row[2], row[3]) for row in result}


async def set_updated_at(db: Database, user_id: str, when: datetime) -> Any:
    """Backdate a row, so a later write shows in `updated_at` whatever the clock's resolution."""
    async with db.engine.begin() as connection:
        await connection.execute(text("UPDATE users SET updated_at = :t WHERE id = :i"), {"t": when, "i": user_id})
    return (await rows(db, user_id))[user_id][2]


def user_writes(db: Database) -> AbstractContextManager[list[str]]:
    """Statements that write the users table, as the engine sends them."""
    return statements_sent(
        db, lambda statement: statement.lstrip().upper().startswith(("INSERT INTO USERS", "UPDATE USERS"))
    )


async def poll(db: Database, prefix: str, count: int) -> dict[str, tuple[str, Any, Any]]:
    """The rows once `count` of them are there; fails after POLL_S."""
    deadline = time.monotonic() + POLL_S
    while True:
        found = await rows(db, prefix)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


@asynccontextmanager
async def writer(users: UserDirectory) -> AsyncIterator[None]:
    """The background writer, running as a task for the block's duration."""
    task = asyncio.get_running_loop().create_task(users.run())
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


async def test_remember_writes_at_once(db: Database, prefix: str) -> None:
    users = UserDirectory(db)
    await users.remember(who(prefix + "alice", "Alice"))
    assert {k: v[0] for k, v in (await rows(db, prefix)).items()} == {prefix + "alice": "Alice"}


async def test_remember_soon_is_written_by_the_background_writer(db: Database, prefix: str) -> None:
    users = UserDirectory(db)
    users.remember_soon(who(prefix + "bob", "Bob"))
    assert await rows(db, prefix) == {}  # queued, not written on the caller's path
    async with writer(users):
        found = await poll(db, prefix, 1)
        assert {k: v[0] for k, v in found.items()} == {prefix + "bob": "Bob"}
        # The writer keeps serving: a later arrival is written too.
        users.remember_soon(who(prefix + "carol", "Carol"))
        found = await poll(db, prefix, 2)
    assert {k: v[0] for k, v in found.items()} == {prefix + "bob": "Bob", prefix + "carol": "Carol"}


async def test_a_changed_name_updates_the_row_and_an_unchanged_one_is_not_rewritten(db: Database, prefix: str) -> None:
    alice = prefix + "alice"
    users = UserDirectory(db)
    await users.remember(who(alice, "Alice"))
    created_at = (await rows(db, prefix))[alice][1]
    old = await set_updated_at(db, alice, OLD)

    # Known unchanged: no statement at all.
    with user_writes(db) as writes:
        await users.remember(who(alice, "Alice"))
        users.remember_soon(who(alice, "Alice"))
        await users.flush()
    assert writes == []
    # Another process (no memory of her) upserts the same name: the row is left alone.
    await UserDirectory(db).remember(who(alice, "Alice"))
    assert (await rows(db, prefix))[alice] == ("Alice", created_at, old)

    # A new name: written, with a new updated_at; created_at stays.
    await users.remember(who(alice, "Alice Liddell"))
    name, created, updated = (await rows(db, prefix))[alice]
    assert (name, created) == ("Alice Liddell", created_at)
    assert updated != old

    # The same through the queue.
    old = await set_updated_at(db, alice, OLD)
    users.remember_soon(who(alice, "Alice L."))
    await users.flush()
    name, created, updated = (await rows(db, prefix))[alice]
    assert (name, created) == ("Alice L.", created_at)
    assert updated != old


async def test_flush_writes_everything_queued_with_the_latest_names(db: Database, prefix: str) -> None:
    users = UserDirectory(db)
    for i in range(5):
        users.remember_soon(who(f"{prefix}{i}", f"User {i}"))
    users.remember_soon(who(f"{prefix}0", "Renamed"))  # renamed while waiting
    assert await rows(db, prefix) == {}
    await users.flush()
    assert {k: v[0] for k, v in (await rows(db, prefix)).items()} == {
        f"{prefix}0": "Renamed",
        **{f"{prefix}{i}": f"User {i}" for i in range(1, 5)},
    }
    with user_writes(db) as writes:
        await users.flush()  # nothing left queued
    assert writes == []


@pytest.mark.parametrize("how", ["flush", "run"])
async def test_more_users_than_one_write_batch_all_land(db: Database, prefix: str, how: str) -> None:
    count = WRITE_BATCH * 2 + 200
    users = UserDirectory(db)
    for i in range(count):
        users.remember_soon(who(f"{prefix}{i:05}", f"Name {i}"))
    if how == "flush":
        await users.flush()
        found = await rows(db, prefix)
    else:
        async with writer(users):
            found = await poll(db, prefix, count)
    assert len(found) == count
    assert all(found[f"{prefix}{i:05}"][0] == f"Name {i}" for i in range(count))
