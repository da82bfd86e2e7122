"""Is a user connected anywhere right now? Decides in-app only versus Web Push (FR-009).

Presence (online/away) is being built separately; until it lands, "active" means "holds at
least one stream connection" (any transport), which is what the hub of each process knows
for its own connections. `ActiveUsers` is the tiny protocol the notification worker needs;
the presence work can replace these implementations with one that also counts "away".

- `LocalActiveUsers`: the embedded default, one process: ask the hub.
- `RedisActiveUsers`: every process refreshes, every `REFRESH_S`, one expiring key per user
  connected to it (`SET … PX TTL_MS`), and answers from its own hub first, then Redis.
  Conservative in both directions by at most `TTL_MS`: a user who just left still counts as
  active for up to 6 s (no push for that short while; the notification is in-app and in the
  REST list), and a user who just connected to another process may get one push as well.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import redis.asyncio as redis
from redis.exceptions import RedisError

from . import topics
from .hub import Hub
from .redis_keys import RedisKeys

log = logging.getLogger(__name__)

REFRESH_S = 2.0
TTL_MS = 6_000
_USER_TOPIC_PREFIX = topics.user("")


class ActiveUsers(Protocol):
    async def is_user_active(self, user_id: str) -> bool: ...

    async def run(self) -> None: ...


class LocalActiveUsers:
    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    async def is_user_active(self, user_id: str) -> bool:
        return self._hub.has_subscribers(topics.user(user_id))

    async def run(self) -> None:
        return None


class RedisActiveUsers:
    def __init__(self, hub: Hub, url: str, keys: RedisKeys) -> None:
        self._hub = hub
        self._client: redis.Redis = redis.Redis.from_url(url)
        self._keys = keys

    async def is_user_active(self, user_id: str) -> bool:
        if self._hub.has_subscribers(topics.user(user_id)):
            return True
        try:
            return bool(await self._client.exists(self._keys.active_user(user_id)))
        except RedisError:
            return False  # unknown: prefer sending a push over losing one

    async def run(self) -> None:
        """Owned by the app; cancelled on shutdown."""
        try:
            while True:
                users = [
                    t[len(_USER_TOPIC_PREFIX) :]
                    for t in self._hub.subscribed_topics()
                    if t.startswith(_USER_TOPIC_PREFIX)
                ]
                try:
                    async with self._client.pipeline(transaction=False) as pipe:
                        for user_id in users:
                            pipe.set(self._keys.active_user(user_id), 1, px=TTL_MS)
                        await pipe.execute()
                except RedisError as error:
                    log.warning("active users refresh: %s", error)
                await asyncio.sleep(REFRESH_S)
        finally:
            await self._client.aclose()
