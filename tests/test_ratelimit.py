"""The rate limiter contract (app/infra/ratelimit.py), run against both backends: in memory
(`ratelimit_memory`) and in a real Redis (`ratelimit_redis`, on a `RedisConnection` as a server
process has). Fast: rates of a fraction of a second, no waiting for a calendar minute. What
only one backend has (bounded memory, expiring keys) is tested after the contract."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from app.errors import RateLimited
from app.infra.ratelimit import Limits, Rate, RateLimiter
from app.infra.ratelimit_memory import MemoryRateLimiter
from app.infra.ratelimit_redis import RedisRateLimiter
from app.infra.redis_connection import RedisConnection
from app.infra.redis_keys import RedisKeys

from .support import free_port


@pytest.fixture(params=["memory", "redis"])
def limiter(request: pytest.FixtureRequest) -> RateLimiter:
    if request.param == "memory":
        return MemoryRateLimiter()
    connection: RedisConnection = request.getfixturevalue("redis_connection")
    return RedisRateLimiter(connection, RedisKeys(request.getfixturevalue("redis_prefix")))


def key() -> str:
    return uuid.uuid4().hex


async def test_a_burst_of_count_is_allowed_then_refused_with_the_wait(limiter: RateLimiter) -> None:
    rate, k = Rate(5, 60.0), key()
    assert [await limiter.acquire(k, rate) for _ in range(5)] == [0.0] * 5
    wait = await limiter.acquire(k, rate)
    # One action frees every period / count = 12 s.
    assert 11.0 < wait <= 12.0


async def test_a_refused_action_is_not_counted(limiter: RateLimiter) -> None:
    rate, k = Rate(2, 60.0), key()
    await limiter.acquire(k, rate)
    await limiter.acquire(k, rate)
    waits = [await limiter.acquire(k, rate) for _ in range(20)]
    # Refusals do not push the next allowance further out.
    assert all(0 < w <= 30.0 for w in waits)
    assert max(waits) - min(waits) < 1.0


async def test_keys_are_independent(limiter: RateLimiter) -> None:
    rate, a, b = Rate(1, 60.0), key(), key()
    assert await limiter.acquire(a, rate) == 0
    assert await limiter.acquire(a, rate) > 0
    assert await limiter.acquire(b, rate) == 0


async def test_allowance_comes_back_one_interval_at_a_time(limiter: RateLimiter) -> None:
    rate, k = Rate(4, 0.4), key()  # one every 100 ms, 4 at once
    for _ in range(4):
        assert await limiter.acquire(k, rate) == 0
    wait = await limiter.acquire(k, rate)
    assert 0 < wait <= 0.1
    await asyncio.sleep(wait + 0.02)
    assert await limiter.acquire(k, rate) == 0
    assert await limiter.acquire(k, rate) > 0  # only one came back


async def test_no_window_edge_to_straddle(limiter: RateLimiter) -> None:
    """Hammer for two and a half periods. GCRA's promise: in any span of t seconds at most
    `count + t / interval` actions (+1 for clock granularity): a burst, then the rate. A fixed
    window lets 2 x count through in an instant across its edge."""
    rate, k = Rate(10, 0.5), key()
    interval_s = rate.period_s / rate.count
    allowed: list[float] = []
    deadline = time.monotonic() + 1.25
    while time.monotonic() < deadline:
        if await limiter.acquire(k, rate) == 0:
            allowed.append(time.monotonic())
        await asyncio.sleep(0.002)
    for i, start in enumerate(allowed):
        for j in range(i, len(allowed)):
            assert j - i + 1 <= rate.count + (allowed[j] - start) / interval_s + 1
    # Within any tenth of a second: the burst at most, never two bursts.
    assert max(sum(1 for t in allowed if s <= t < s + 0.1) for s in allowed) <= rate.count + 3
    # And it is a limit, not a ban: the hammering user gets the rate's worth, about 10 + 1.25 / 0.05.
    assert len(allowed) >= 25


async def test_redis_state_expires_when_spent(redis_connection: RedisConnection, redis_prefix: str) -> None:
    limiter = RedisRateLimiter(redis_connection, RedisKeys(redis_prefix))
    await limiter.acquire("post:alice", Rate(100, 60.0))
    ttl_ms = await redis_connection.client.pttl(f"{redis_prefix}:rate:post:alice")
    assert 0 < ttl_ms <= 600  # one interval (60 s / 100) of allowance spent


def test_memory_limiter_is_bounded() -> None:
    now = [0.0]
    limiter = MemoryRateLimiter(max_keys=100, clock=lambda: now[0])
    rate = Rate(1, 60.0)
    for i in range(1_000):
        assert limiter.try_acquire(f"k{i}", rate) == 0
        assert len(limiter) <= 100
    # Keys that have recovered are forgotten first, active ones kept.
    now[0] = 61.0
    limiter.try_acquire("fresh", rate)
    assert len(limiter) <= 100


async def test_limits_raise_rate_limited_per_action(limiter: RateLimiter) -> None:
    limits = Limits(limiter, {"post": Rate(1, 60.0), "typing": None})
    user = key()
    await limits.hit(user)
    with pytest.raises(RateLimited) as refused:
        await limits.hit(user)
    assert refused.value.code == "rate_limited"
    assert 59 <= refused.value.retry_after_s <= 60
    await limits.hit(user, "discussion")  # no rate: not limited
    for _ in range(50):
        await limits.hit(user, "typing")


async def test_limits_fail_open_when_redis_is_unreachable(redis_prefix: str) -> None:
    """A limit stops abuse; it must not turn a Redis outage into refused pings and typing."""
    connection = RedisConnection(f"redis://127.0.0.1:{free_port()}/0")
    try:
        limits = Limits(RedisRateLimiter(connection, RedisKeys(redis_prefix)), {"post": Rate(1, 60.0)})
        for _ in range(3):
            await limits.hit("alice")
    finally:
        await connection.close()
