"""The embedded event log: everything in this one process, for running without Redis.

Same contract as the Redis log (see `app.eventlog`). Bounded: each topic keeps at most
`max_per_topic` events and nothing older than the retention window; the tail buffer for the
process's reader holds at most `max_tail` events and reports a gap if it ever overflows.
The log dies with the process; its random epoch makes old cursors `sync_required`.
"""

from __future__ import annotations

import asyncio
import heapq
import secrets
from collections import deque
from collections.abc import AsyncIterator, Collection

from .cursor import ORIGIN, Cursor, Position
from .eventlog import LOG_GAP, CursorUnavailable, LogGap, check_epoch
from .events import Event, now_ms


class _Topic:
    __slots__ = ("events", "trimmed_upto")

    def __init__(self) -> None:
        self.events: deque[Event] = deque()
        # The newest position removed from this topic; a cursor before it has lost events.
        self.trimmed_upto: Position = ORIGIN


class MemoryEventLog:
    def __init__(self, *, retention_s: int, max_per_topic: int = 10_000, max_tail: int = 100_000) -> None:
        self.epoch = secrets.token_hex(4)
        self._retention_ms = retention_s * 1000
        self._max_per_topic = max_per_topic
        self._max_tail = max_tail
        self._topics: dict[str, _Topic] = {}
        self._last = ORIGIN
        self._tail_buffer: deque[Event | LogGap] = deque()
        self._tail_wakeup = asyncio.Event()

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

    async def append(self, topic: str, event_type: str, body: bytes, *, durable: bool = True) -> Event:
        event = Event.from_log(self.epoch, self._next_position(), topic, event_type, body)
        if durable:
            stored = self._topics.setdefault(topic, _Topic())
            stored.events.append(event)
            self._trim(stored, event.position.ms)
        self._feed_tail(event)
        return event

    def _trim(self, topic: _Topic, now: int) -> None:
        oldest_ms = now - self._retention_ms
        events = topic.events
        while events and (len(events) > self._max_per_topic or events[0].position.ms < oldest_ms):
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
        # A cursor at the head misses nothing, however old it is (an idle log's head), and the
        # origin is the head a fresh, empty log hands out: neither is "expired" by its age.
        if after != ORIGIN and after < self._last and after.ms < now_ms() - self._retention_ms:
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

    async def tail(self) -> AsyncIterator[Event | LogGap]:
        buffer = self._tail_buffer
        while True:
            while buffer:
                yield buffer.popleft()
            self._tail_wakeup.clear()
            await self._tail_wakeup.wait()
