"""Chooses each backend from the settings: Redis when REDIS_URL is set, otherwise the
embedded in-process variants (one process only; see `EmbeddedLock`)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

import redis.asyncio as redis

from app.infra.ratelimit import Limits, MemoryRateLimiter, Rate, RateLimiter, RedisRateLimiter
from app.infra.redis_keys import RedisKeys
from app.infra.redis_options import resilient
from app.log.eventlog import EventLog
from app.log.eventlog_memory import MemoryEventLog
from app.log.eventlog_redis import RedisEventLog
from app.presence.store import PresenceStore, PresenceTimings
from app.presence.store_memory import MemoryPresenceStore
from app.presence.store_redis import RedisPresenceStore
from app.settings import Settings, StartupError


def make_limits(settings: Settings, log: EventLog) -> Limits:
    """The per-user limits, in Redis (shared by every process) when the log is there."""
    limiter: RateLimiter
    if isinstance(log, RedisEventLog) and not settings.log_redis_url:
        limiter = RedisRateLimiter(log.client, RedisKeys(settings.redis_prefix))  # type: ignore[arg-type]
    elif settings.redis_url is not None:  # the log has a Redis of its own: limits stay on REDIS_URL
        limiter = RedisRateLimiter(
            redis.Redis.from_url(settings.redis_url, **resilient()), RedisKeys(settings.redis_prefix)
        )
    else:
        limiter = MemoryRateLimiter()
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


def make_event_log(settings: Settings) -> EventLog:
    if settings.redis_url is not None:
        url = settings.log_redis_url or settings.redis_url
        return RedisEventLog(
            url,
            prefix=settings.redis_prefix,
            retention_s=settings.retention_s,
            shards=settings.log_shards,
            wait_replicas=settings.log_wait_replicas,
        )
    return MemoryEventLog(retention_s=settings.retention_s)


class EmbeddedLogBusy(StartupError):
    pass


class EmbeddedLock:
    """Refuses a second process on the same data directory while the log is embedded: two
    processes would each hold half of the events and silently split every discussion."""

    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / "embedded-log.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        handle = self._path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            process = f"process {holder}" if holder.isdigit() else "process"
            raise EmbeddedLogBusy(
                f"PARLEY_DATA_DIR={self._path.parent}: another Parley {process} already serves the embedded "
                "event log from this directory.\nStop it, give this server its own PARLEY_DATA_DIR (and PORT), "
                "or set REDIS_URL to share one log between processes."
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def make_presence_store(settings: Settings) -> PresenceStore:
    """Presence follows the event log: in Redis when REDIS_URL is set, else in this process."""
    timings = PresenceTimings(
        ttl_ms=round(settings.presence_ttl_s * 1000),
        grace_ms=round(settings.presence_grace_s * 1000),
        typing_ttl_ms=round(settings.typing_ttl_s * 1000),
        throttle_ms=settings.typing_throttle_ms,
        idle_ms=round(settings.idle_timeout_s * 1000),
    )
    if settings.redis_url is not None:
        return RedisPresenceStore(settings.redis_url, prefix=settings.redis_prefix, timings=timings)
    return MemoryPresenceStore(timings)
