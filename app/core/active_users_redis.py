"""Active users in Redis, across every process (contract: `app.core.active_users`).

Every process keeps one expiring Redis set of the users active (online) on it, sending only the
changes every `REFRESH_S` (one round trip, however many users: at 20,000 connections a key per
user cost a command per user every refresh), and lists itself in a sorted set of live
processes. It answers from its own process first, then asks every live process's set.
Conservative in both directions by at most `REFRESH_S`..`TTL_MS`: a user who just left or went
away still counts as active for a few seconds (no push for that short while; the notification is in-app
and in the REST list), and a user who just connected to another process may get one push as
well.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

import redis.asyncio as redis
from redis.exceptions import RedisError

from app.cancellation import raise_if_cancelling, stop_if_cancelled
from app.core.active_users import LocalActivity
from app.infra.redis_connection import RedisConnection
from app.infra.redis_keys import RedisKeys

log = logging.getLogger(__name__)

REFRESH_S = 2.0
TTL_MS = 6_000


class RedisActiveUsers:
    def __init__(self, local: LocalActivity, connection: RedisConnection, keys: RedisKeys) -> None:
        self._local = local
        self._connection = connection
        self._client: redis.Redis = connection.client  # shared: closed by its owner
        self._keys = keys
        self._process_id = secrets.token_hex(6)
        self._written: set[str] = set()  # what our set in Redis holds, as far as we know

    async def is_user_active(self, user_id: str) -> bool:
        if self._local.is_online_here(user_id):
            return True
        try:
            now_ms = await self._connection.server_time_ms()
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
        expires_ms = await self._connection.server_time_ms() + TTL_MS
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


def _chunks(items: list[str], size: int = 1_000) -> list[list[str]]:
    return [items[start : start + size] for start in range(0, len(items), size)]
