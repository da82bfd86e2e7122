"""Leases in Redis, shared by every process (contract: `app.infra.lease`).

- `RedisLease`: a key `SET … PX` with the holder's random token, renewed while working; the
  checkpoint is saved only while the lease is still ours (`lease_save.lua`), and expires with
  the log's retention window (an older checkpoint points at nothing anyway).
- `RedisKeyedLease`: one `SET … PX` key per lease (`RedisKeys.lease`), holding this process's
  token; it expires by itself, so a holder that died frees the key after `lease_s`.

Both run on the process's shared `RedisConnection`; closing a lease leaves it open.
"""

from __future__ import annotations

import secrets
from importlib import resources

import redis.asyncio as redis

from app.infra.redis_connection import RedisConnection
from app.infra.redis_keys import RedisKeys


def _script(name: str) -> str:
    return resources.files("app").joinpath(f"lua/{name}.lua").read_text()


class RedisLease:
    def __init__(
        self, connection: RedisConnection, keys: RedisKeys, name: str, *, lease_s: float, checkpoint_ttl_s: int
    ) -> None:
        self._client: redis.Redis = connection.client
        self._lease_key = keys.lease(name)
        self._checkpoint_key = keys.checkpoint(name)
        self._token = secrets.token_hex(8)
        self._lease_ms = int(lease_s * 1000)
        self._checkpoint_ms = checkpoint_ttl_s * 1000
        self._hold = self._client.register_script(_script("lease_hold"))
        self._save = self._client.register_script(_script("lease_save"))
        self._release = self._client.register_script(_script("lease_release"))

    async def hold(self) -> bool:
        return bool(await self._hold(keys=[self._lease_key], args=[self._token, self._lease_ms]))

    async def release(self) -> None:
        await self._release(keys=[self._lease_key], args=[self._token])

    async def checkpoint(self) -> str | None:
        value: bytes | None = await self._client.get(self._checkpoint_key)  # type: ignore[assignment]
        return None if value is None else value.decode()

    async def initialise(self, cursor: str) -> None:
        await self._client.set(self._checkpoint_key, cursor, nx=True, px=self._checkpoint_ms)

    async def save(self, cursor: str) -> bool:
        saved = await self._save(
            keys=[self._lease_key, self._checkpoint_key], args=[self._token, cursor, self._checkpoint_ms]
        )
        return bool(saved)

    async def close(self) -> None:
        return None  # the connection is shared: its owner closes it


class RedisKeyedLease:
    def __init__(self, connection: RedisConnection, keys: RedisKeys, name: str, *, lease_s: float) -> None:
        self._client: redis.Redis = connection.client
        self._keys = keys
        self._name = name
        self._token = secrets.token_hex(8)
        self._lease_ms = int(lease_s * 1000)
        self._hold = self._client.register_script(_script("lease_hold"))
        self._renew = self._client.register_script(_script("lease_renew"))
        self._release = self._client.register_script(_script("lease_release"))

    def key(self, key: str) -> str:
        return self._keys.lease(f"{self._name}:{key}")

    async def acquire(self, key: str) -> bool:
        return bool(await self._hold(keys=[self.key(key)], args=[self._token, self._lease_ms]))

    async def still_held(self, key: str) -> bool:
        return bool(await self._renew(keys=[self.key(key)], args=[self._token, self._lease_ms]))

    async def release(self, key: str) -> None:
        await self._release(keys=[self.key(key)], args=[self._token])

    async def close(self) -> None:
        return None  # the connection is shared: its owner closes it
