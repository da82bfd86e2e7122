"""The embedded event log: everything in this one process, for running without Redis.

Same contract as the Redis log (see `app.log.eventlog`). Bounded: each topic keeps at most
`max_per_topic` events and nothing older than the retention window; the tail buffer for the
process's reader holds at most `max_tail` events and reports a gap if it ever overflows.
The log dies with the process; its random epoch makes old cursors `sync_required`.
"""

from __future__ import annotations

import asyncio
import heapq
import secrets
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Collection, Sequence

from app.log.cursor import ORIGIN, Cursor, Position
from app.log.eventlog import LOG_GAP, Append, CursorUnavailable, LogGap, check_epoch, retention_passed
from app.log.events import Event, now_ms

SWEEP_INTERVAL_MS = 60_000


class _Topic:
    __slots__ = ("events", "trimmed_upto")

    def __init__(self) -> None:
        self.events: deque[Event] = deque()
        # The newest position removed from this topic; a cursor before it has lost events.
        self.trimmed_upto: Position = ORIGIN


class MemoryEventLog:
    def __init__(
        self,
        *,
        retention_s: int,
        max_per_topic: int = 10_000,
        max_tail: int = 100_000,
        max_journal: int = 100_000,
        max_dedupe: int = 10_000,
    ) -> None:
        self.epoch = secrets.token_hex(4)
        self._retention_ms = retention_s * 1000
        self._max_per_topic = max_per_topic
        self._max_tail = max_tail
        self._topics: dict[str, _Topic] = {}
        self._last = ORIGIN
        self._tail_buffer: deque[Event | LogGap] = deque()
        self._tail_wakeup = asyncio.Event()
        self._next_sweep_ms = 0
        self._created_ms = now_ms()
        # Every durable event of every topic (references, not copies), for `read_journal`.
        self._journal = _Topic()
        self._max_journal = max_journal
        self._journal_wakeup = asyncio.Event()
        # Outbox entries already appended (`append(dedupe_key=...)`), oldest first, bounded.
        self._appended: OrderedDict[str, Event] = OrderedDict()
        self._max_dedupe = max_dedupe

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._topics.clear()

    async def ping(self) -> None:
        return None

    def _next_position(self) -> Position:
        ms = max(now_ms(), self._last.ms)
        position = Position(ms, self._last.seq + 1) if ms == self._last.ms else Position(ms, 0)
        self._last = position
        return position

    async def append(
        self, topic: str, event_type: str, body: bytes, *, durable: bool = True, dedupe_key: str | None = None
    ) -> Event:
        return self._append(topic, event_type, body, durable, dedupe_key)

    async def append_many(self, appends: Sequence[Append]) -> list[Event]:
        # No await between them: the batch enters the log whole, in the order given.
        return [self._append(a.topic, a.event_type, a.body, a.durable, a.dedupe_key) for a in appends]

    def _append(self, topic: str, event_type: str, body: bytes, durable: bool, dedupe_key: str | None) -> Event:
        if dedupe_key is not None:
            earlier = self._appended.get(dedupe_key)
            if earlier is not None:
                return earlier
        event = Event.from_log(self.epoch, self._next_position(), topic, event_type, body)
        if dedupe_key is not None:
            self._appended[dedupe_key] = event
            if len(self._appended) > self._max_dedupe:
                self._appended.popitem(last=False)
        if durable:
            stored = self._topics.setdefault(topic, _Topic())
            stored.events.append(event)
            self._trim(stored, event.position.ms)
            self._journal.events.append(event)
            self._trim(self._journal, event.position.ms, self._max_journal)
            self._journal_wakeup.set()
            if event.position.ms >= self._next_sweep_ms:
                self._sweep(event.position.ms)
        self._feed_tail(event)
        return event

    def _sweep(self, now: int) -> None:
        """Trim idle topics too, and forget the empty ones, so memory follows the retention window.
        A forgotten topic's cursors are older than the window, which `read_after` catches."""
        self._next_sweep_ms = now + SWEEP_INTERVAL_MS
        for name, topic in list(self._topics.items()):
            self._trim(topic, now)
            if not topic.events:
                del self._topics[name]

    def _trim(self, topic: _Topic, now: int, max_events: int | None = None) -> None:
        oldest_ms = now - self._retention_ms
        events = topic.events
        limit = self._max_per_topic if max_events is None else max_events
        while events and (len(events) > limit or events[0].position.ms < oldest_ms):
            topic.trimmed_upto = events.popleft().position

    def _feed_tail(self, event: Event) -> None:
        if len(self._tail_buffer) >= self._max_tail:
            # The reader is hopelessly behind: tell it, rather than grow without bound.
            self._tail_buffer.clear()
            self._tail_buffer.append(LOG_GAP)
        self._tail_buffer.append(event)
        self._tail_wakeup.set()

    async def read_after(self, topics: Collection[str], cursor: Cursor, limit: int) -> list[Event]:
        check_epoch(self.epoch, cursor)
        after = cursor.position
        if after > self._last:
            raise CursorUnavailable("unknown_position")
        if retention_passed(after, self._last, self._created_ms, now_ms(), self._retention_ms):
            raise CursorUnavailable("expired")
        runs: list[list[Event]] = []
        for name in topics:
            topic = self._topics.get(name)
            if topic is None:
                continue
            self._trim(topic, now_ms())
            if after < topic.trimmed_upto:
                raise CursorUnavailable("expired")
            run: list[Event] = []
            for event in reversed(topic.events):  # newest first: stop at the cursor
                if event.position <= after:
                    break
                if len(run) == limit:
                    raise CursorUnavailable("too_far_behind")
                run.append(event)
            run.reverse()
            runs.append(run)
        merged = list(heapq.merge(*runs, key=lambda event: event.position))
        if len(merged) > limit:
            raise CursorUnavailable("too_far_behind")
        return merged

    async def head(self) -> Cursor:
        return Cursor(self.epoch, self._last)

    async def read_journal(self, cursor: Cursor, limit: int, wait_s: float) -> list[Event]:
        check_epoch(self.epoch, cursor)
        after = cursor.position
        journal = self._journal
        self._trim(journal, now_ms(), self._max_journal)
        if after < journal.trimmed_upto:
            raise CursorUnavailable("expired")
        if not journal.events or journal.events[-1].position <= after:
            self._journal_wakeup.clear()
            try:
                async with asyncio.timeout(wait_s):  # not wait_for: see PresenceTracker.run
                    await self._journal_wakeup.wait()
            except TimeoutError:
                return []
        found: list[Event] = []
        for event in reversed(journal.events):  # newest first: stop at the cursor
            if event.position <= after:
                break
            found.append(event)
        found.reverse()
        return found[:limit]

    async def tail(self) -> AsyncIterator[Event | LogGap]:
        buffer = self._tail_buffer
        while True:
            while buffer:
                yield buffer.popleft()
            self._tail_wakeup.clear()
            await self._tail_wakeup.wait()
