"""When to recompute what: a per-key debounce schedule with single-flight. Pure (the caller
passes the time), so every rule is tested without waiting.

Rules, per key (a discussion):
- the first change of a burst schedules a run `debounce_s` later, and never sooner than
  `min_interval_s` after the previous run of that key started;
- changes while a run is scheduled join it; changes while it *runs* make exactly one more
  run after it (the "final" one, which sees them), never a second concurrent one;
- a failed run is retried after `retry_s`, at most `max_attempts` times in a row.
So a burst of N changes over T seconds costs about T / min_interval_s + 2 runs, whatever N.

Checkpointing: each change comes with `since`, the log position just before the event that
caused it. `floor()` is the oldest `since` not yet covered by a finished run: a worker that
saves min(floor, position read) as its checkpoint and crashes loses no change (its successor
re-reads from there, at the price of a run or two that would not have been needed).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.log.cursor import Position

Since = Position


@dataclass(slots=True)
class _Entry:
    due: float | None = None  # when the next run may start; None: nothing to run
    running: bool = False
    last_start: float = float("-inf")
    since: Since | None = None  # oldest change not yet taken by a run
    covered: Since | None = None  # oldest change the current run is covering
    failures: int = 0


def _oldest(a: Since | None, b: Since | None) -> Since | None:
    if a is None:
        return b
    if b is None:
        return a
    return b if b < a else a


class DebounceSchedule:
    def __init__(
        self, *, debounce_s: float, min_interval_s: float, retry_s: float = 1.0, max_attempts: int = 5
    ) -> None:
        self._debounce_s = debounce_s
        self._min_interval_s = min_interval_s
        self._retry_s = retry_s
        self._max_attempts = max_attempts
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        """Keys with a run scheduled or in progress (the worker bounds this)."""
        return sum(1 for e in self._entries.values() if e.running or e.due is not None)

    def mark(self, key: str, since: Since, now: float) -> None:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        entry.since = _oldest(entry.since, since)
        if not entry.running and entry.due is None:
            entry.due = self._next_start(entry, now)

    def _next_start(self, entry: _Entry, now: float) -> float:
        return max(now + self._debounce_s, entry.last_start + self._min_interval_s)

    def next_due(self) -> float | None:
        """When the earliest scheduled run may start (None: nothing scheduled)."""
        dues = [e.due for e in self._entries.values() if e.due is not None and not e.running]
        return min(dues) if dues else None

    def take_due(self, now: float) -> str | None:
        """The key whose run is due soonest (and at or before `now`), now marked running."""
        best: tuple[float, str] | None = None
        for key, entry in self._entries.items():
            if (
                entry.due is not None
                and not entry.running
                and entry.due <= now
                and (best is None or entry.due < best[0])
            ):
                best = (entry.due, key)
        if best is None:
            return None
        entry = self._entries[best[1]]
        entry.running, entry.due, entry.last_start = True, None, now
        entry.covered, entry.since = entry.since, None
        return best[1]

    def finished(self, key: str, now: float, *, ok: bool) -> None:
        entry = self._entries.get(key)
        if entry is None or not entry.running:
            return
        entry.running = False
        if ok:
            entry.covered, entry.failures = None, 0
            if entry.since is not None:  # changed while running: the final run
                entry.due = self._next_start(entry, now)
            return
        entry.failures += 1
        if entry.failures >= self._max_attempts:
            # Give up on this burst; the next change schedules it again.
            entry.covered = entry.since = None
            entry.failures = 0
            return
        entry.since, entry.covered = _oldest(entry.covered, entry.since), None
        entry.due = now + self._retry_s

    def floor(self) -> Since | None:
        """The oldest change no finished run has covered yet (None: all covered)."""
        oldest: Since | None = None
        for entry in self._entries.values():
            oldest = _oldest(oldest, _oldest(entry.since, entry.covered))
        return oldest

    def prune(self, now: float) -> None:
        """Forget idle keys whose last run started more than `min_interval_s` ago (their
        next change may start a run at once anyway), so the map holds recent keys only."""
        idle = [
            key
            for key, e in self._entries.items()
            if not e.running and e.due is None and e.since is None and now - e.last_start >= self._min_interval_s
        ]
        for key in idle:
            del self._entries[key]

    def clear(self) -> None:
        """Drop everything (the lease was lost: the next holder redoes it from the checkpoint)."""
        self._entries.clear()
