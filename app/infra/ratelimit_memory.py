"""Rate limits in this process's memory (contract: `app.infra.ratelimit`; GCRA explained there).

For the embedded log's one process, and for the per-connection and per-IP limits of every
process. Bounded: at most `max_keys` keys (those whose allowance is full again go first).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from app.infra.ratelimit import Rate


class MemoryRateLimiter:
    DEFAULT_MAX_KEYS = 100_000

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_keys = max_keys
        self._clock = clock
        # key -> TAT (ms, clock time). Insertion order is last-use order (updated keys move to
        # the end), so the oldest key goes first when the table is full.
        self._tat: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._tat)

    async def acquire(self, key: str, rate: Rate) -> float:
        return self.try_acquire(key, rate)

    def try_acquire(self, key: str, rate: Rate) -> float:
        """`acquire` without awaiting (for callers outside a coroutine: the accept loop)."""
        now = self._clock() * 1000
        tat = max(self._tat.pop(key, now), now)
        # Compared as a backlog, not as `tat + interval - period - now`: with float ms that sum
        # can round a hair above 0 for an idle key (1 a minute then refused its first action).
        wait = (tat - now) - (rate.period_ms - rate.interval_ms)
        if wait > 0:
            self._tat[key] = tat
            return wait / 1000
        self._tat[key] = tat + rate.interval_ms
        if len(self._tat) > self._max_keys:
            self._shrink(now)
        return 0.0

    def _shrink(self, now: float) -> None:
        """Forget keys whose TAT has passed (they are as good as new); if still full, the least
        recently used (fail open for them: bounded memory matters more than their limit)."""
        self._tat = {key: tat for key, tat in self._tat.items() if tat > now}
        excess = len(self._tat) - self._max_keys * 9 // 10
        if excess > 0:
            for key in list(self._tat)[:excess]:
                del self._tat[key]
