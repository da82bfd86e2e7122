"""`RedisEventLog.read_journal`: every durable event of every topic after a cursor, for the
background workers (the notification worker resumes from its checkpoint with it).

One shard: one blocking XREAD on the shard's journal, as before sharding. Several: each shard's
journal is read in the same round trip as the shard's epoch and newest position
(`RedisEventLog.read_shards`), merged, and cut at the least newest position, as catch-up reads
are (docs/SCALING.md "One order across shards"); while there is nothing, it looks again every
`JOURNAL_POLL_S` (a blocking read can wait on one cluster slot only, and the journals are in
one slot each).
"""

from __future__ import annotations

import asyncio
import heapq
import time
from typing import TYPE_CHECKING

from app.log.cursor import Cursor, Position
from app.log.eventlog import CursorUnavailable
from app.log.events import Event

if TYPE_CHECKING:
    from app.log.eventlog_redis import RedisEventLog

# The longest one blocking read waits (the caller asks again).
BLOCK_MS = 5_000
JOURNAL_POLL_S = 0.05


async def read_journal(log: RedisEventLog, cursor: Cursor, limit: int, wait_s: float) -> list[Event]:
    if len(log.shards) == 1:
        return await _read_blocking(log, cursor, limit, wait_s)
    deadline = time.monotonic() + wait_s
    while True:
        events = await _read_once(log, cursor, limit)
        if events or time.monotonic() >= deadline:
            return events
        await asyncio.sleep(min(JOURNAL_POLL_S, max(0.0, deadline - time.monotonic())))


def _check_not_trimmed(info: dict[str, object] | None, after: Position) -> None:
    deleted = (info or {}).get("max-deleted-entry-id")
    if deleted is not None and Position.parse(deleted) > after:  # type: ignore[arg-type]
        raise CursorUnavailable("expired")


async def _read_once(log: RedisEventLog, cursor: Cursor, limit: int) -> list[Event]:
    after = cursor.position
    reads = await log.read_shards([(keys.journal, after, limit) for keys in log.shards])
    epoch = log.epoch
    if cursor.epoch != epoch:
        raise CursorUnavailable("unknown_epoch")
    last = min(shard_read.last for shard_read in reads)
    runs = []
    for keys, shard_read in zip(log.shards, reads, strict=True):
        _check_not_trimmed(await log.stream_info(log.client, keys.journal), after)
        entries = shard_read.results[(keys.journal, after, limit)]
        runs.append([log.event(epoch, i, fields) for i, fields in entries if Position.parse(i) <= last])
    return list(heapq.merge(*runs, key=lambda event: event.position))[:limit]


async def _read_blocking(log: RedisEventLog, cursor: Cursor, limit: int, wait_s: float) -> list[Event]:
    """One shard: wait on the journal itself (XREAD BLOCK), on a connection of its own."""
    reader = log.journal_reader
    epoch = await log.load_epoch(reader, 0)
    if cursor.epoch != epoch:
        raise CursorUnavailable("unknown_epoch")
    after = cursor.position
    journal = log.shards[0].journal
    _check_not_trimmed(await log.stream_info(reader, journal), after)
    block_ms = max(1, min(int(wait_s * 1000), BLOCK_MS))
    response = await reader.xread({journal: str(after)}, block=block_ms, count=limit)
    batches: list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] = response or []  # type: ignore[assignment]
    return [log.event(epoch, entry_id, fields) for _stream, entries in batches for entry_id, fields in entries]
