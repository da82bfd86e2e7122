"""Chooses and builds every backend from the settings, in one place: Redis when REDIS_URL is
set (all on one `RedisConnection` per process), otherwise the embedded in-process variants
(one process only; see `EmbeddedLock`).

`make_backends(settings)` is called once per process by whoever composes it (`create_app`
through `app.startup.open_backends`); the workers ask the result for their leases and for the
active users, never build their own. `Backends.close()` closes everything, the shared Redis
connection last.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.core.active_users import ActiveUsers, LocalActivity
from app.core.active_users_memory import LocalActiveUsers
from app.core.active_users_redis import RedisActiveUsers
from app.core.embedded_lock import EmbeddedLock
from app.infra.lease import KeyedLease, Lease
from app.infra.lease_memory import MemoryKeyedLease, MemoryLease
from app.infra.lease_redis import RedisKeyedLease, RedisLease
from app.infra.ratelimit import Limits, Rate, RateLimiter
from app.infra.ratelimit_memory import MemoryRateLimiter
from app.infra.ratelimit_redis import RedisRateLimiter
from app.infra.redis_connection import RedisConnection
from app.infra.redis_keys import RedisKeys
from app.log.eventlog import EventLog
from app.log.eventlog_memory import MemoryEventLog
from app.log.eventlog_redis import RedisEventLog
from app.presence.store import PresenceStore, PresenceTimings
from app.presence.store_memory import MemoryPresenceStore
from app.presence.store_redis import RedisPresenceStore
from app.settings import Settings


@dataclass
class Backends:
    """One process's backends. `redis` is None when embedded (then `lock` is set)."""

    settings: Settings
    redis: RedisConnection | None
    event_log: EventLog
    presence_store: PresenceStore
    limits: Limits
    lock: EmbeddedLock | None

    async def open(self) -> None:
        """Take the embedded lock, then check the log and the presence store answer."""
        if self.lock is not None:
            self.lock.acquire()
        await self.event_log.open()
        await self.presence_store.open()

    def lease(self, name: str, *, lease_s: float) -> Lease:
        """A worker lease with a checkpoint (kept for the log's retention window)."""
        if self.redis is None:
            return MemoryLease()
        return RedisLease(self.redis, self._keys, name, lease_s=lease_s, checkpoint_ttl_s=self.settings.retention_s)

    def keyed_lease(self, name: str, *, lease_s: float) -> KeyedLease:
        if self.redis is None:
            return MemoryKeyedLease()
        return RedisKeyedLease(self.redis, self._keys, name, lease_s=lease_s)

    def active_users(self, local: LocalActivity) -> ActiveUsers:
        """Who is active anywhere; needs this process's presence tracker (built after the log)."""
        if self.redis is None:
            return LocalActiveUsers(local)
        return RedisActiveUsers(local, self.redis, self._keys)

    @property
    def _keys(self) -> RedisKeys:
        return RedisKeys(self.settings.redis_prefix)

    async def close(self) -> None:
        """Close the log and the store, then the shared connection (which closes whatever the
        Redis backends still hold), then release the embedded lock."""
        try:
            await self.event_log.close()
            await self.presence_store.close()
        finally:
            if self.redis is not None:
                await self.redis.close()
            if self.lock is not None:
                self.lock.release()


def make_backends(settings: Settings) -> Backends:
    """Every backend for `settings`, built but not opened (`Backends.open`). Raises ValueError
    for a REDIS_URL Redis cannot use."""
    if settings.redis_url is None:
        return Backends(
            settings=settings,
            redis=None,
            event_log=MemoryEventLog(retention_s=settings.retention_s),
            presence_store=MemoryPresenceStore(presence_timings(settings)),
            limits=make_limits(settings, MemoryRateLimiter()),
            lock=EmbeddedLock(settings.data_dir),
        )
    connection = RedisConnection(settings.redis_url)
    prefix = settings.redis_prefix
    return Backends(
        settings=settings,
        redis=connection,
        event_log=RedisEventLog(connection, prefix=prefix, retention_s=settings.retention_s),
        presence_store=RedisPresenceStore(connection, prefix=prefix, timings=presence_timings(settings)),
        limits=make_limits(settings, RedisRateLimiter(connection, RedisKeys(prefix))),
        lock=None,
    )


def make_limits(settings: Settings, limiter: RateLimiter) -> Limits:
    """The per-user limits of the API, counted by `limiter`."""
    per_minute = Rate.per_minute
    return Limits(
        limiter,
        {
            "post": per_minute(settings.rate_limit_per_min),
            "discussion": per_minute(settings.discussion_limit_per_min),
            "follow": per_minute(settings.follow_limit_per_min),
            "typing": per_minute(settings.typing_limit_per_min),
            "presence": per_minute(settings.presence_limit_per_min),
            "ws_message": per_minute(settings.ws_user_messages_per_min),
            "beacon": per_minute(settings.beacon_limit_per_min),
        },
    )


def presence_timings(settings: Settings) -> PresenceTimings:
    return PresenceTimings(
        ttl_ms=round(settings.presence_ttl_s * 1000),
        grace_ms=round(settings.presence_grace_s * 1000),
        typing_ttl_ms=round(settings.typing_ttl_s * 1000),
        throttle_ms=settings.typing_throttle_ms,
        idle_ms=round(settings.idle_timeout_s * 1000),
    )
