"""`RedisActiveUsers` across processes, on a real redis-server: each process's set of active
users (a connection whose status is online), and the sorted set of live processes, as another
process sees them.

Each "process" is a real `PresenceTracker` (on a real `Hub` and the in-memory presence store;
only its connections and their statuses matter here) with its own `RedisActiveUsers`, whose
`run()` refresh loop runs as a real task. Changes reach the other process at the next refresh
(every REFRESH_S): tests poll with a bounded deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import redis.asyncio as redis

from app.auth import Identity
from app.core.active_users import ActiveUsers
from app.core.active_users_memory import LocalActiveUsers
from app.core.active_users_redis import REFRESH_S, TTL_MS, RedisActiveUsers
from app.core.hub import Hub
from app.core.presence_tracker import PresenceTracker
from app.infra.metrics import Metrics
from app.infra.redis_connection import RedisConnection
from app.infra.redis_keys import RedisKeys
from app.log.eventlog_memory import MemoryEventLog
from app.presence.store import PresenceTimings, Status
from app.presence.store_memory import MemoryPresenceStore

DEADLINE_S = REFRESH_S * 3 + 2


def new_process() -> PresenceTracker:
    """One process's connections: a real tracker (nothing here is in a discussion, so it
    publishes nothing)."""
    hub = Hub(MemoryEventLog(retention_s=3600), Metrics())
    return PresenceTracker(MemoryPresenceStore(PresenceTimings()), hub, sweep_interval_s=30.0)


@dataclass
class Session:
    """What the tracker reads from a stream session (`PresenceSession`)."""

    identity: Identity
    discussion_ids: list[str] = field(default_factory=list)
    status: Status = "online"

    def apply_status(self, status: Status) -> None:
        self.status = status

    def went_idle(self) -> None:
        pass


async def connect(tracker: PresenceTracker, user_id: str) -> str:
    return await tracker.connect(Session(Identity(user_id, user_id, frozenset(), time.time() + 3600)))


@contextlib.asynccontextmanager
async def running(active: ActiveUsers) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(active.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def eventually(check: Callable[[], Awaitable[object]], want: object) -> object:
    """Polls `check()` until it returns `want`, for at most DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        got = await check()
        if got == want or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.05)


@pytest.fixture
def client(redis_connection: RedisConnection) -> redis.Redis:
    return redis_connection.client


@pytest.fixture(params=["memory", "redis"])
def active_users_of(request: pytest.FixtureRequest) -> Callable[[PresenceTracker], ActiveUsers]:
    """Builds the active users of one process (its tracker) on one backend."""
    if request.param == "memory":
        return LocalActiveUsers
    connection: RedisConnection = request.getfixturevalue("redis_connection")
    keys = RedisKeys(request.getfixturevalue("redis_prefix"))
    return lambda tracker: RedisActiveUsers(tracker, connection, keys)


# The contract, both backends: what one process sees of its own connections.


async def test_a_user_connected_here_is_active_at_once_and_not_after_leaving(
    active_users_of: Callable[[PresenceTracker], ActiveUsers],
) -> None:
    tracker = new_process()
    active = active_users_of(tracker)
    assert not await active.is_user_active("alice")
    alice = await connect(tracker, "alice")
    async with running(active):
        assert await active.is_user_active("alice")  # before any refresh
        assert not await active.is_user_active("bob")
        tracker.disconnect(alice)
        assert await eventually(lambda: active.is_user_active("alice"), False) is False


async def test_run_stops_when_cancelled(active_users_of: Callable[[PresenceTracker], ActiveUsers]) -> None:
    tracker = new_process()
    active = active_users_of(tracker)
    await connect(tracker, "alice")
    task = asyncio.get_running_loop().create_task(active.run())
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.wait({task}, timeout=DEADLINE_S)
    assert task.done()
    assert await active.is_user_active("alice")  # its own tracker still answers


# Redis: what other processes see.


async def test_a_user_connected_to_one_process_is_active_as_seen_from_another(
    redis_connection: RedisConnection, redis_prefix: str, client: redis.Redis
) -> None:
    keys = RedisKeys(redis_prefix)
    tracker = new_process()
    process = RedisActiveUsers(tracker, redis_connection, keys)
    observer = RedisActiveUsers(new_process(), redis_connection, keys)  # another process: nobody connected to it

    async def seen() -> tuple[bool, bool, bool]:
        return (
            await observer.is_user_active("alice"),
            await observer.is_user_active("bob"),
            await observer.is_user_active("carol"),
        )

    alice = await connect(tracker, "alice")
    bob = await connect(tracker, "bob")
    assert await seen() == (False, False, False)
    async with running(process), running(observer):
        assert await process.is_user_active("alice")  # its own connections answer at once
        assert await eventually(seen, (True, True, False)) == (True, True, False)

        # Every key this leaves in Redis expires.
        names = [key async for key in client.scan_iter(match=f"{redis_prefix}:*")]
        assert len(names) == 2, names  # one process's set (the observer's is empty), the process list
        for name in names:
            assert 0 < await client.pttl(name) <= 2 * TTL_MS, name

        # Bob goes; Alice stays: the next refresh sends just that change.
        tracker.disconnect(bob)
        assert await eventually(seen, (True, False, False)) == (True, False, False)
        tracker.disconnect(alice)
        assert await eventually(seen, (False, False, False)) == (False, False, False)

        # She comes back.
        alice = await connect(tracker, "alice")
        assert await eventually(seen, (True, False, False)) == (True, False, False)
    # The process stopped: its set is deleted, not left to expire.
    assert await seen() == (False, False, False)
    leftover = [key async for key in client.scan_iter(match=f"{redis_prefix}:*")]
    for name in leftover:
        assert 0 < await client.pttl(name) <= 2 * TTL_MS, name


async def test_a_user_away_on_every_connection_is_inactive_everywhere(
    redis_connection: RedisConnection, redis_prefix: str, client: redis.Redis
) -> None:
    """FR-009: every tab hidden (each connection `away`) counts as inactive, on this process
    and as another process sees it; one connection back online makes the user active again."""
    keys = RedisKeys(redis_prefix)
    tracker = new_process()
    process = RedisActiveUsers(tracker, redis_connection, keys)
    observer = RedisActiveUsers(new_process(), redis_connection, keys)

    async def seen() -> tuple[bool, bool]:
        return await process.is_user_active("erin"), await observer.is_user_active("erin")

    laptop, phone = await connect(tracker, "erin"), await connect(tracker, "erin")
    async with running(process), running(observer):
        assert await eventually(seen, (True, True)) == (True, True)
        await tracker.set_status(laptop, "away")
        assert await eventually(seen, (True, True)) == (True, True)  # the phone is still online
        await tracker.set_status(phone, "away")
        assert await eventually(seen, (False, False)) == (False, False)
        await tracker.set_status(laptop, "online")
        assert await eventually(seen, (True, True)) == (True, True)
        # PUT /api/presence sets every connection of the user's at once.
        await tracker.set_user_status(Identity("erin", "erin", frozenset(), time.time() + 3600), "away")
        assert await eventually(seen, (False, False)) == (False, False)
        # An away connection closing changes nothing; a new one starts online.
        tracker.disconnect(phone)
        assert await seen() == (False, False)
        await connect(tracker, "erin")
        assert await eventually(seen, (True, True)) == (True, True)


async def test_the_embedded_default_asks_its_own_connections() -> None:
    tracker = new_process()
    active = LocalActiveUsers(tracker)
    assert await active.is_user_active("frank") is False
    tab = await connect(tracker, "frank")
    assert await active.is_user_active("frank") is True
    await tracker.set_status(tab, "away")
    assert await active.is_user_active("frank") is False
    await tracker.set_status(tab, "online")
    tracker.disconnect(tab)
    assert await active.is_user_active("frank") is False


async def test_a_process_that_stops_refreshing_is_not_asked(
    redis_connection: RedisConnection, redis_prefix: str, client: redis.Redis
) -> None:
    """A process that died without cleaning up: its set is ignored once its time in the list
    of live processes has passed, and everything it left expires."""
    keys = RedisKeys(redis_prefix)
    tracker = new_process()
    process = RedisActiveUsers(tracker, redis_connection, keys)
    observer = RedisActiveUsers(new_process(), redis_connection, keys)
    await connect(tracker, "dave")
    async with running(observer):
        async with running(process):
            assert await eventually(lambda: observer.is_user_active("dave"), True) is True
        assert await observer.is_user_active("dave") is False
        # What a process killed mid-refresh leaves behind: its set, listed until a moment ago.
        seconds, micros = await client.time()
        now_ms = seconds * 1000 + micros // 1000
        await client.sadd(keys.active_users("ghost"), "dave")
        await client.pexpire(keys.active_users("ghost"), TTL_MS)
        await client.zadd(keys.active_processes, {"ghost": now_ms - 1})
        assert await observer.is_user_active("dave") is False
        # The same set, listed as live: asked.
        await client.zadd(keys.active_processes, {"ghost": now_ms + TTL_MS})
        assert await observer.is_user_active("dave") is True
