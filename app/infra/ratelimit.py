"""Rate limits (NFR-015): GCRA, one contract, in memory or in Redis.

GCRA (the generic cell rate algorithm) keeps one number per key, the "theoretical arrival
time" (TAT): when the key's allowance would be full again. An action is allowed when
`TAT + interval - period <= now`, and moves TAT on by one interval (`period / count`). So a key
may spend `count` actions at once, then one per interval: in any span of t seconds at most
`count + t / interval`. No window edge to straddle (a fixed one-minute window let 200 posts
through in 3.7 s across a minute's edge, issue 11; GCRA allows 106 of 100/min in those 3.7 s),
exact `Retry-After`, O(1) memory per key and one round trip.

Why not the `limits` library: its async Redis storage opens a client of its own (coredis by
default) instead of sharing the process's one connection and key prefix, and its exact
"moving window" keeps a list of `count` timestamps per key; GCRA is one key and a dozen lines
of Lua (`lua/gcra.lua`), with Redis's clock so every server shares one limit.

- `MemoryRateLimiter` (`ratelimit_memory`): this process only (the embedded log's processes,
  per-connection and per-IP limits); bounded: at most `max_keys` keys (expired ones go first).
- `RedisRateLimiter` (`ratelimit_redis`): shared by every process; one EVALSHA per action on
  the process's shared connection; keys expire with TAT.
`Limits` names the per-user limits of the API (settings) and raises `RateLimited` (429). It
fails open: with Redis unreachable an action is let through (logged), because a limit exists
to stop abuse, not to turn a Redis outage into refused pings and typing (what needs Redis
for its own work still answers 503 there).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from redis.exceptions import RedisError

from app.errors import RateLimited

log = logging.getLogger(__name__)
# While the limiter's store is unreachable, say so at most this often.
FAIL_OPEN_LOG_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class Rate:
    """`count` actions per `period_s`, all of them at once if spent in a burst."""

    count: int
    period_s: float

    @classmethod
    def per_minute(cls, count: int) -> Rate | None:
        """`count` a minute; None (no limit) for 0."""
        return cls(count, 60.0) if count > 0 else None

    @property
    def interval_ms(self) -> float:
        return self.period_s * 1000 / self.count

    @property
    def period_ms(self) -> float:
        return self.period_s * 1000


class RateLimiter(Protocol):
    async def acquire(self, key: str, rate: Rate) -> float:
        """Count one action under `key`: 0.0 when allowed, else the seconds until one would be
        (and nothing is counted)."""


Action = Literal["post", "discussion", "follow", "typing", "presence", "ws_message", "beacon"]

DESCRIPTIONS: Mapping[Action, str] = {
    "post": "responses posted, edited or deleted",
    "discussion": "discussions created",
    "follow": "follows and unfollows",
    "typing": "typing signals",
    "presence": "presence updates",
    "ws_message": "WebSocket messages",
    "beacon": "beacon batches",
}


def retry_after_s(wait_s: float) -> int:
    """Whole seconds for `Retry-After`, never 0 (a client must wait at least the wait)."""
    return max(1, math.ceil(wait_s))


class Limits:
    """The API's per-user limits, by action; an action without a rate is not limited."""

    def __init__(self, limiter: RateLimiter, rates: Mapping[Action, Rate | None]) -> None:
        self.limiter = limiter
        self._rates = dict(rates)
        self._logged_at = -FAIL_OPEN_LOG_EVERY_S

    async def hit(self, user_id: str, action: Action = "post") -> None:
        """Count one `action` of the user; raise `RateLimited` (429, Retry-After) past its rate."""
        rate = self._rates.get(action)
        if rate is None:
            return
        try:
            wait_s = await self.limiter.acquire(f"{action}:{user_id}", rate)
        except RedisError as error:
            now = time.monotonic()
            if now - self._logged_at >= FAIL_OPEN_LOG_EVERY_S:
                self._logged_at = now
                log.warning("rate limits unavailable, letting actions through: %s", error)
            return
        if wait_s > 0:
            seconds = retry_after_s(wait_s)
            raise RateLimited(
                f"more than {rate.count} {DESCRIPTIONS[action]} in {rate.period_s:g}s; try again in {seconds}s",
                retry_after_s=seconds,
            )
