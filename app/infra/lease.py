"""A cluster-wide worker lease with a checkpoint: one holder at a time processes a stream of
work, and whoever holds it next resumes from the last checkpoint the holders saved.

- `MemoryLease`: the embedded default (one process: always held; the checkpoint lives as
  long as the embedded log it points into).
- `RedisLease`: a key `SET … PX` with the holder's random token, renewed while working; the
  checkpoint is saved only while the lease is still ours (`lease_save.lua`), and expires with
  the log's retention window (an older checkpoint points at nothing anyway).
"""

from __future__ import annotations

import secrets
from importlib import resources
from typing import Protocol

import redis.asyncio as redis

from app.infra.redis_keys import RedisKeys
from app.infra.redis_options import resilient


class Lease(Protocol):
    async def hold(self) -> bool:
        """Acquire or renew; True while this process is the holder."""

    async def release(self) -> None: ...

    async def checkpoint(self) -> str | None: ...

    async def initialise(self, cursor: str) -> None:
        """Set the checkpoint if there is none yet (first start of a cluster)."""

    async def save(self, cursor: str) -> bool:
        """Store the checkpoint; False if the lease was lost (the save is then refused)."""

    async def close(self) -> None: ...


class MemoryLease:
    def __init__(self) -> None:
        self._checkpoint: str | None = None

    async def hold(self) -> bool:
        return True

    async def release(self) -> None:
        return None

    async def checkpoint(self) -> str | None:
        return self._checkpoint

    async def initialise(self, cursor: str) -> None:
        if self._checkpoint is None:
            self._checkpoint = cursor

    async def save(self, cursor: str) -> bool:
        self._checkpoint = cursor
        return True

    async def close(self) -> None:
        return None


def _script(name: str) -> str:
    return resources.files("app").joinpath(f"lua/{name}.lua").read_text()


class RedisLease:
    def __init__(self, url: str, keys: RedisKeys, name: str, *, lease_s: float, checkpoint_ttl_s: int) -> None:
        self._client: redis.Redis = redis.Redis.from_url(url, **resilient())
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
        await self._client.aclose()


class KeyedLease(Protocol):
    """Short leases on many keys (one per discussion): at most one holder per key at a time,
    cluster-wide. `acquire` also renews a key this holder already has."""

    async def acquire(self, key: str) -> bool: ...

    async def still_held(self, key: str) -> bool:
        """Renew `key` if this holder still has it; False if it expired (even if now free)."""

    async def release(self, key: str) -> None: ...

    async def close(self) -> None: ...


class MemoryKeyedLease:
    """The embedded default: one process, so a set of the keys held is the whole truth."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    async def acquire(self, key: str) -> bool:
        self._held.add(key)
        return True

    async def still_held(self, key: str) -> bool:
        return key in self._held

    async def release(self, key: str) -> None:
        self._held.discard(key)

    async def close(self) -> None:
        self._held.clear()


class RedisKeyedLease:
    """One `SET … PX` key per lease (`RedisKeys.lease`), holding this process's token; it
    expires by itself, so a holder that died frees the key after `lease_s`."""

    def __init__(self, url: str, keys: RedisKeys, name: str, *, lease_s: float) -> None:
        self._client: redis.Redis = redis.Redis.from_url(url)
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
        await self._client.aclose()
