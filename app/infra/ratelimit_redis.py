"""Rate limits in Redis, shared by every process (contract: `app.infra.ratelimit`).

GCRA in one Lua script (`lua/gcra.lua`, with Redis's clock so every server shares one limit):
one EVALSHA per action on the process's shared connection; each key expires with its TAT.
"""

from __future__ import annotations

from importlib import resources

from app.infra.ratelimit import Rate
from app.infra.redis_connection import RedisConnection
from app.infra.redis_keys import RedisKeys

_GCRA_LUA = resources.files("app").joinpath("lua/gcra.lua").read_text()


class RedisRateLimiter:
    def __init__(self, connection: RedisConnection, keys: RedisKeys) -> None:
        self._keys = keys
        self._gcra = connection.client.register_script(_GCRA_LUA)

    async def acquire(self, key: str, rate: Rate) -> float:
        wait_ms = await self._gcra(
            keys=[self._keys.rate(key)], args=[f"{rate.interval_ms:.3f}", f"{rate.period_ms:.3f}"]
        )
        return int(wait_ms) / 1000
