"""The event log: one interface, two backends (`MemoryEventLog`, `RedisEventLog`).

Contract, identical for both backends (tests/test_eventlog.py runs one suite against each):

- `append` gives the event the next position in one global, strictly increasing order shared
  by every topic (see `app.log.cursor` for why) and stores it in its topic for the retention
  window. A non-durable event (typing, presence) gets a position and reaches `tail` readers
  but is not stored: it is never replayed.
- `append_many` appends a batch in one go (one round trip per shard for the Redis log): like
  `append` on each in turn, so each topic's events get increasing positions in the order given,
  after everything this process appended before. (Across topics, the Redis log with several
  shards may interleave them differently, as concurrent appends are.) On an error each topic has
  a prefix of its events appended, possibly none or all: a caller that records what it appended
  records it only once `append_many` has returned.
- `tail` yields every event appended after it started, durable or not, in position order, to
  the one reader a process runs (`app.core.hub.Hub`). If the backend cannot guarantee the sequence
  is gap-free (the reader lost its place, or the log lost its data and started a new epoch),
  it yields `LOG_GAP` and goes on from the present;
  the hub then drops its subscribers, who resume from the durable log by cursor.
- `read_after(topics, cursor, limit)` returns the stored events of those topics after the
  cursor, merged in position order. It raises `CursorUnavailable` when it cannot give all of
  them: the cursor is from another epoch, ahead of the log, older than the retention window
  while newer events exist (some of them may be trimmed), or more than `limit` events behind.
  That is the `sync_required` outcome, never a silent gap. A cursor at the head of the log is
  always valid, however old.
- `head` is the cursor of the newest position, for a client that must start afresh.
- `read_journal(cursor, limit, wait_s)` returns up to `limit` durable events of *all* topics
  after the cursor, in position order, waiting up to `wait_s` for the first one if there is
  none yet (`[]` on timeout). It is how a background worker resumes from its checkpoint after
  a crash. It raises `CursorUnavailable` when events after the cursor were already trimmed
  (older than the retention window) or the cursor is from another epoch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from app.log.cursor import Cursor, Position
from app.log.events import Event


class LogGap:
    """Marker yielded by `tail` when events may have been missed."""

    def __repr__(self) -> str:
        return "LOG_GAP"


LOG_GAP: Final = LogGap()


class CursorUnavailable(Exception):
    """The events after a cursor cannot all be given; the client must resynchronise."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Append:
    """One event of an `append_many` batch (the arguments of `append`)."""

    topic: str
    event_type: str
    body: bytes
    durable: bool = True
    dedupe_key: str | None = None


class EventLog(Protocol):
    @property
    def epoch(self) -> str:
        """The tag every cursor of this log carries (`app.log.cursor`)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the log cannot be reached (readiness)."""

    async def append(
        self, topic: str, event_type: str, body: bytes, *, durable: bool = True, dedupe_key: str | None = None
    ) -> Event:
        """Append an event. With `dedupe_key`, at most once per key within the retention
        window: a second append returns the first one's event (the outbox relays by it)."""

    async def append_many(self, appends: Sequence[Append]) -> list[Event]:
        """Append a batch: one event per `Append`, in the same order (see the contract above)."""

    async def read_after(self, topics: Collection[str], cursor: Cursor, limit: int) -> list[Event]: ...

    async def head(self) -> Cursor: ...

    async def read_journal(self, cursor: Cursor, limit: int, wait_s: float) -> list[Event]: ...

    def tail(self) -> AsyncIterator[Event | LogGap]: ...


def check_epoch(log_epoch: str, cursor: Cursor) -> None:
    if cursor.epoch != log_epoch:
        raise CursorUnavailable("unknown_epoch")


def retention_passed(after: Position, last: Position, created_ms: int, now_ms: int, retention_ms: int) -> bool:
    """Whether events after `after` may have been trimmed by age.

    The origin cursor (`0-0`, handed out while the log was empty) stands for the moment the
    log was created, so a client that started on an empty log still resumes exactly.
    """
    return after < last and max(after.ms, created_ms) < now_ms - retention_ms
