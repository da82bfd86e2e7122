"""`RedisActiveUsers` across processes, on a real redis-server: each process's set of connected
users, and the sorted set of live processes, as another process sees them.

Each "process" is a real `Hub` (on the embedded event log; only its subscriptions matter here)
with its own `RedisActiveUsers`, whose `run()` refresh loop runs as a real task. Changes reach
the other process at the next refresh (every REFRESH_S): tests poll with a bounded deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as redis

from app.core.active_users import REFRESH_S, TTL_MS, RedisActiveUsers
from app.core.hub import Hub
from app.infra.metrics import Metrics
from app.infra.redis_keys import RedisKeys
from app.log import topics
from app.log.eventlog_memory import MemoryEventLog

DEADLINE_S = REFRESH_S * 3 + 2


def new_hub() -> Hub:
    return Hub(MemoryEventLog(retention_s=3600), Metrics())


@contextlib.asynccontextmanager
async def running(active: RedisActiveUsers) -> AsyncIterator[None]:
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
async def client(redis_url: str) -> AsyncIterator[redis.Redis]:
    made = redis.Redis.from_url(redis_url)
    yield made
    await made.aclose()


async def test_a_user_connected_to_one_process_is_active_as_seen_from_another(
    redis_url: str, redis_prefix: str, client: redis.Redis
) -> None:
    keys = RedisKeys(redis_prefix)
    hub = new_hub()
    process = RedisActiveUsers(hub, redis_url, keys)
    observer = RedisActiveUsers(new_hub(), redis_url, keys)  # another process: nobody connected to it

    async def seen() -> tuple[bool, bool, bool]:
        return (
            await observer.is_user_active("alice"),
            await observer.is_user_active("bob"),
            await observer.is_user_active("carol"),
        )

    alice = hub.subscribe([topics.user("alice"), topics.discussion("d1")], max_buffered=10)
    bob = hub.subscribe([topics.user("bob")], max_buffered=10)
    assert await seen() == (False, False, False)
    try:
        async with running(process), running(observer):
            assert await process.is_user_active("alice")  # its own hub answers at once
            assert await eventually(seen, (True, True, False)) == (True, True, False)

            # Every key this leaves in Redis expires.
            names = [key async for key in client.scan_iter(match=f"{redis_prefix}:*")]
            assert len(names) == 2, names  # one process's set (the observer's is empty), the process list
            for name in names:
                assert 0 < await client.pttl(name) <= 2 * TTL_MS, name

            # Bob goes; Alice stays: the next refresh sends just that change.
            hub.unsubscribe(bob)
            assert await eventually(seen, (True, False, False)) == (True, False, False)
            hub.unsubscribe(alice)
            assert await eventually(seen, (False, False, False)) == (False, False, False)

            # She comes back.
            alice = hub.subscribe([topics.user("alice")], max_buffered=10)
            assert await eventually(seen, (True, False, False)) == (True, False, False)
        # The process stopped: its set is deleted, not left to expire.
        assert await seen() == (False, False, False)
        leftover = [key async for key in client.scan_iter(match=f"{redis_prefix}:*")]
        for name in leftover:
            assert 0 < await client.pttl(name) <= 2 * TTL_MS, name
    finally:
        hub.unsubscribe(alice)


async def test_a_process_that_stops_refreshing_is_not_asked(
    redis_url: str, redis_prefix: str, client: redis.Redis
) -> None:
    """A process that died without cleaning up: its set is ignored once its time in the list
    of live processes has passed, and everything it left expires."""
    keys = RedisKeys(redis_prefix)
    hub = new_hub()
    process = RedisActiveUsers(hub, redis_url, keys)
    observer = RedisActiveUsers(new_hub(), redis_url, keys)
    subscription = hub.subscribe([topics.user("dave")], max_buffered=10)
    try:
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
    finally:
        hub.unsubscribe(subscription)
