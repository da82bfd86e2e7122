"""Per-user rate limit on actions that fire events (NFR-015: 100 per user per minute).

A fixed one-minute window per user: simple, cheap (one INCR) and shared by every process when
Redis is there. The embedded variant keeps the current window's counters only.
"""

from __future__ import annotations

import time
from typing import Protocol

import redis.asyncio as redis

from .errors import RateLimited
from .redis_keys import RedisKeys

WINDOW_S = 60


class RateLimiter(Protocol):
    async def hit(self, user_id: str) -> None:
        """Count one action; raise `RateLimited` (429, with Retry-After) past the limit."""


def _refuse(limit: int, now: float) -> RateLimited:
    retry_after = WINDOW_S - int(now) % WINDOW_S
    return RateLimited(f"more than {limit} actions a minute; try again in {retry_after}s", retry_after_s=retry_after)


class MemoryRateLimiter:
    def __init__(self, limit_per_min: int) -> None:
        self._limit = limit_per_min
        self._window = -1
        self._counts: dict[str, int] = {}

    async def hit(self, user_id: str) -> None:
        now = time.time()
        window = int(now) // WINDOW_S
        if window != self._window:  # a new minute: forget the last one (bounded memory)
            self._window, self._counts = window, {}
        count = self._counts.get(user_id, 0) + 1
        if count > self._limit:
            raise _refuse(self._limit, now)
        self._counts[user_id] = count


class RedisRateLimiter:
    def __init__(self, client: redis.Redis, keys: RedisKeys, limit_per_min: int) -> None:
        self._client = client
        self._keys = keys
        self._limit = limit_per_min

    async def hit(self, user_id: str) -> None:
        now = time.time()
        key = self._keys.rate(user_id, int(now) // WINDOW_S)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, WINDOW_S * 2)
            count, _ = await pipe.execute()
        if count > self._limit:
            raise _refuse(self._limit, now)
