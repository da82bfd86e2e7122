"""Is a user active anywhere right now? Decides in-app only versus Web Push too (FR-009).

A user is active while they hold at least one stream connection (any transport, any process)
whose presence status is `online`. A user whose every connection is `away` (every tab hidden,
on every device) is inactive, so a notification reaches them as a push as well as in-app.
Each process knows its own connections' statuses (`LocalActivity`, the presence tracker);
`ActiveUsers` is the tiny protocol the notification worker needs.

- `LocalActiveUsers`: the embedded default, one process: ask the tracker.
- `RedisActiveUsers`: every process keeps one expiring Redis set of the users active on it,
  sending only the changes every `REFRESH_S` (one round trip, however many users: at 20,000
  connections a key per user cost a command per user every refresh), and lists itself in a
  sorted set of live processes. It answers from its own process first, then asks every live
  process's set. Conservative in both directions by at most `REFRESH_S`..`TTL_MS`: a user who
  just left or went away still counts as active for a few seconds (no push for that short
  while; the notification is in-app and in the REST list), and a user who just connected to, or
  came back on, another process may get one push as well.

A WebSocket carries its own connection's status. `PUT /api/presence` (SSE and long-poll pages)
sets the statuses of the caller's connections on the process that answers it; connections on
other processes keep theirs until their own next signal (PresenceTracker.set_user_status).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Protocol

import redis.asyncio as redis
from redis.exceptions import RedisError

from app.cancellation import raise_if_cancelling, stop_if_cancelled
from app.infra.redis_keys import RedisKeys
from app.infra.redis_options import resilient

log = logging.getLogger(__name__)

REFRESH_S = 2.0
TTL_MS = 6_000


class LocalActivity(Protocol):
    """This process's connections (app/core/presence_tracker.py: `PresenceTracker`)."""

    def online_users(self) -> set[str]: ...

    def is_online_here(self, user_id: str) -> bool: ...


class ActiveUsers(Protocol):
    async def is_user_active(self, user_id: str) -> bool: ...

    async def run(self) -> None: ...


class LocalActiveUsers:
    def __init__(self, local: LocalActivity) -> None:
        self._local = local

    async def is_user_active(self, user_id: str) -> bool:
        return self._local.is_online_here(user_id)

    async def run(self) -> None:
        return None


class RedisActiveUsers:
    def __init__(self, local: LocalActivity, url: str, keys: RedisKeys) -> None:
        self._local = local
        self._client: redis.Redis = redis.Redis.from_url(url, **resilient())
        self._keys = keys
        self._process_id = secrets.token_hex(6)
        self._written: set[str] = set()  # what our set in Redis holds, as far as we know

    async def is_user_active(self, user_id: str) -> bool:
        if self._local.is_online_here(user_id):
            return True
        try:
            seconds, micros = await self._client.time()
            now_ms = seconds * 1000 + micros // 1000
            processes: list[bytes] = await self._client.zrangebyscore(  # type: ignore[assignment]
                self._keys.active_processes, now_ms, "+inf"
            )
            async with self._client.pipeline(transaction=False) as pipe:
                for process in processes:
                    pipe.sismember(self._keys.active_users(process.decode()), user_id)
                return any(await pipe.execute())
        except RedisError:
            return False  # unknown: prefer sending a push over losing one

    async def _refresh(self) -> None:
        """Send only what changed since the last refresh, then extend the set's life: one
        round trip per refresh however many users this process holds."""
        users = self._local.online_users()
        key = self._keys.active_users(self._process_id)
        joined, left = users - self._written, self._written - users
        seconds, micros = await self._client.time()
        expires_ms = seconds * 1000 + micros // 1000 + TTL_MS
        async with self._client.pipeline(transaction=True) as pipe:
            if not self._written:
                pipe.delete(key)  # after an error or at start: rewrite it whole
            for chunk in _chunks(sorted(joined)):
                pipe.sadd(key, *chunk)
            for chunk in _chunks(sorted(left)):
                pipe.srem(key, *chunk)
            pipe.pexpire(key, TTL_MS)
            pipe.zadd(self._keys.active_processes, {self._process_id: expires_ms})
            pipe.zremrangebyscore(self._keys.active_processes, "-inf", expires_ms - 2 * TTL_MS)
            pipe.pexpire(self._keys.active_processes, 2 * TTL_MS)
            await pipe.execute()
        self._written = users

    async def run(self) -> None:
        """Owned by the app; cancelled on shutdown."""
        try:
            while True:
                raise_if_cancelling()
                try:
                    await self._refresh()
                except RedisError as error:
                    stop_if_cancelled(error)
                    self._written = set()  # unknown state: rewrite the set next time
                    log.warning("active users refresh: %s", error)
                await asyncio.sleep(REFRESH_S)
        finally:
            with contextlib.suppress(RedisError):
                await self._client.delete(self._keys.active_users(self._process_id))
            await self._client.aclose()


def _chunks(items: list[str], size: int = 1_000) -> list[list[str]]:
    return [items[start : start + size] for start in range(0, len(items), size)]
