"""The event log on Redis Streams, shared by any number of processes and servers.

Layout (keys from `app.infra.redis_keys`): each topic is a stream trimmed by age to the retention
window (`XADD … MINID ~`) and expiring when idle; the *firehose* is one more stream holding
every event for a short window. `append.lua` writes both atomically and gives the event the
firehose's ID as its position in both, so positions form one global order (see
`app.log.cursor`). Each process runs one blocking `XREAD` on the firehose (`tail`), on a connection
of its own, and fans out in memory: Redis sees one reader per process, never one per client.

When Redis loses its data (restarted without persistence, flushed), the streams and the epoch
key vanish together. Nothing may then pretend the history is intact, and every process must
agree on what comes next:

- `append.lua` checks the epoch the caller believes in against the key, in the same script
  as the XADD. A missing key is re-minted there, once (GET then SET inside one script: the
  first process to get there wins); a caller whose epoch differs appends nothing, adopts the
  current epoch from the reply and tries again. No event ever enters the new log under the
  old epoch.
- Every read that hands out cursors (`read_after`, `head`, `read_journal`) reads the epoch
  key in the same round trip (`epoch.lua`, minting it the same way), so a cursor of the old
  epoch gets `CursorUnavailable("unknown_epoch")`: the client's `sync_required`.
- Each firehose entry carries its epoch's tag (`p`). The tail compares it with the epoch of
  what it delivered so far and yields `LOG_GAP` *before* the first event of a new epoch, so
  a live connection never crosses the loss silently either (its subscription is dropped and
  its resume by the old cursor is `sync_required`). The periodic gap check reads the key
  too, for a loss followed by no append.

Servers started later read the key the survivors re-minted, so cross-server resume keeps
working. A Redis restarted *with* its data (AOF or RDB) keeps the key: same epoch, readers
resume exactly. The epoch key has no TTL, so `volatile-*` eviction never takes it; under an
`allkeys-*` policy an evicted key costs every client one needless `sync_required`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import secrets
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.infra.batching import GroupCommit
from app.infra.redis_connection import RedisConnection
from app.infra.redis_keys import RedisKeys
from app.log.cursor import ORIGIN, Cursor, Position
from app.log.eventlog import LOG_GAP, CursorUnavailable, LogGap, check_epoch, retention_passed
from app.log.events import Event

log = logging.getLogger(__name__)

FIREHOSE_WINDOW_S = 60
TAIL_BLOCK_MS = 5_000
TAIL_BATCH = 1_000
# How often the reader checks that the firehose was not trimmed past its place.
GAP_CHECK_S = 5.0
MAX_BACKOFF_S = 5.0
CLOSE_TIMEOUT_S = 1.0

# Catch-up reads per pipeline (each names ~3 topics).
CATCH_UP_BATCH = 300

_APPEND_LUA = resources.files("app").joinpath("lua/append.lua").read_text()
_EPOCH_LUA = resources.files("app").joinpath("lua/epoch.lua").read_text()
# The append script refuses an epoch that changed; after adopting the new one, try again.
APPEND_ATTEMPTS = 3


class EpochChanged(RedisError):
    """The log's epoch kept changing under an append (Redis flushed again and again)."""


@dataclass(frozen=True, slots=True)
class _CatchUp:
    """One connection's catch-up read: its topics after its position."""

    topics: tuple[str, ...]
    cursor: Cursor
    limit: int

    @property
    def after(self) -> Position:
        return self.cursor.position


class RedisEventLog:
    def __init__(self, connection: RedisConnection, *, prefix: str, retention_s: int) -> None:
        self._connection = connection
        self._keys = RedisKeys(prefix)
        self._retention_ms = retention_s * 1000
        self._window_ms = FIREHOSE_WINDOW_S * 1000
        self.epoch = ""
        self._epoch_value = ""  # "<tag>.<created ms>", as stored under the epoch key
        self._created_ms = 0
        # The process's shared pool (closed by its owner, not here).
        self._client: redis.Redis = connection.client
        self._append = self._client.register_script(_APPEND_LUA)
        self._epoch_script = self._client.register_script(_EPOCH_LUA)
        # `read_journal` blocks: on a connection of its own.
        self._journal_reader = connection.blocking_reader()
        self._catch_up: GroupCommit[_CatchUp, list[Event]] = GroupCommit(self._read_batch, max_batch=CATCH_UP_BATCH)

    async def open(self) -> None:
        await self._load_epoch(self._client)

    async def _load_epoch(self, client: redis.Redis) -> str:
        """Adopt the log's epoch, creating it if Redis has none (new, or flushed: then every
        older cursor becomes `sync_required`, as it must, since its events are gone)."""
        value = await self._epoch_script(keys=[self._keys.epoch], args=[secrets.token_hex(4)], client=client)
        return self._adopt(value)

    def _adopt(self, value: bytes | str) -> str:
        """Take `value` ("<tag>.<created ms>", from Redis) as the log's epoch; returns the tag."""
        text = value.decode() if isinstance(value, bytes) else value
        if text != self._epoch_value:
            if self._epoch_value:
                log.warning("event log epoch changed (%s -> %s): Redis lost its data", self._epoch_value, text)
            tag, _, created_ms = text.partition(".")
            self._epoch_value, self.epoch, self._created_ms = text, tag, int(created_ms or 0)
        return self.epoch

    async def close(self) -> None:
        await self._catch_up.close()
        await self._journal_reader.aclose()

    async def ping(self) -> None:
        await self._client.ping()

    async def append(
        self, topic: str, event_type: str, body: bytes, *, durable: bool = True, dedupe_key: str | None = None
    ) -> Event:
        keys = [
            self._keys.firehose,
            self._keys.topic(topic),
            self._keys.journal,
            self._keys.epoch,
            self._keys.dedupe(dedupe_key or ""),
        ]
        for _ in range(APPEND_ATTEMPTS):
            expected = self._epoch_value  # what the script checks, whatever others adopt meanwhile
            status, value = await self._append(
                keys=keys,
                args=[
                    topic,
                    event_type,
                    body,
                    self._retention_ms,
                    self._window_ms,
                    "1" if durable else "0",
                    expected,
                    secrets.token_hex(4),
                    "1" if dedupe_key else "0",
                ],
            )
            if status == b"ok":
                epoch = expected.partition(".")[0]
                return Event.from_log(epoch, Position.parse(value), topic, event_type, body)
            self._adopt(value)  # Redis lost its data and has a new epoch: append in that one
        raise EpochChanged("the event log's epoch kept changing")

    async def _stream_info(self, client: redis.Redis) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] = await client.xinfo_stream(self._keys.firehose)
        except ResponseError:  # no such key: nothing was ever appended
            return None
        return info

    async def _last_position(self, client: redis.Redis) -> Position:
        info = await self._stream_info(client)
        return ORIGIN if info is None else Position.parse(info["last-generated-id"])

    async def head(self) -> Cursor:
        async with self._client.pipeline(transaction=False) as pipe:
            await self._epoch_script(keys=[self._keys.epoch], args=[secrets.token_hex(4)], client=pipe)
            pipe.xinfo_stream(self._keys.firehose)
            epoch_value, info = await pipe.execute(raise_on_error=False)
        if isinstance(epoch_value, Exception):
            raise epoch_value
        epoch = self._adopt(epoch_value)
        if isinstance(info, ResponseError):
            return Cursor(epoch, ORIGIN)  # no firehose: nothing was appended in this epoch
        if isinstance(info, Exception):
            raise info
        return Cursor(epoch, Position.parse(info["last-generated-id"]))

    async def read_after(self, topics: Collection[str], cursor: Cursor, limit: int) -> list[Event]:
        # Checked against the epoch key in the batch's own round trip, not against `self.epoch`,
        # which another process may have moved on from before this one noticed.
        return await self._catch_up.submit(_CatchUp(tuple(topics), cursor, limit))

    async def _read_batch(self, requests: Sequence[_CatchUp]) -> list[list[Event] | BaseException]:
        """Every catch-up read waiting right now, in one pipeline: the clock, the firehose's
        head, and each distinct (topic, position) range once. After a restart, the readers of
        one discussion mostly resume from the same position: one XRANGE serves them all."""
        ranges = list(dict.fromkeys((topic, r.after, r.limit) for r in requests for topic in r.topics))
        async with self._client.pipeline(transaction=False) as pipe:
            # The epoch first: if Redis lost its data, the ranges below are of the new epoch,
            # and cursors of the old one must be refused, not served from them.
            await self._epoch_script(keys=[self._keys.epoch], args=[secrets.token_hex(4)], client=pipe)
            pipe.time()
            pipe.xinfo_stream(self._keys.firehose)
            for topic, after, limit in ranges:
                # Exclusive start "(" needs Redis 6.2; one more than the limit tells "too far".
                pipe.xrange(self._keys.topic(topic), min=f"({after}", max="+", count=limit + 1)
            results = await pipe.execute(raise_on_error=False)
        epoch_value, clock, info, *entries = results
        for result in (epoch_value, clock, *entries):
            if isinstance(result, Exception):
                raise result
        epoch = self._adopt(epoch_value)
        seconds, micros = clock
        now_ms = seconds * 1000 + micros // 1000
        if isinstance(info, ResponseError):
            last = ORIGIN  # no firehose: nothing was ever appended
        elif isinstance(info, Exception):
            raise info
        else:
            last = Position.parse(info["last-generated-id"])
        read = dict(zip(ranges, entries, strict=True))
        return [self._caught_up(request, read, epoch, last, now_ms) for request in requests]

    def _caught_up(
        self, request: _CatchUp, read: dict[tuple[str, Position, int], Any], epoch: str, last: Position, now_ms: int
    ) -> list[Event] | BaseException:
        after, limit = request.after, request.limit
        if request.cursor.epoch != epoch:
            return CursorUnavailable("unknown_epoch")
        if after > last:
            return CursorUnavailable("unknown_position")
        if retention_passed(after, last, self._created_ms, now_ms, self._retention_ms):
            return CursorUnavailable("expired")
        runs = []
        for topic in request.topics:
            entries = read[(topic, after, limit)]
            if len(entries) > limit:
                return CursorUnavailable("too_far_behind")
            runs.append([self._event(epoch, entry_id, fields, topic) for entry_id, fields in entries])
        merged = list(heapq.merge(*runs, key=lambda event: event.position))
        if len(merged) > limit:
            return CursorUnavailable("too_far_behind")
        return merged

    async def read_journal(self, cursor: Cursor, limit: int, wait_s: float) -> list[Event]:
        reader = self._journal_reader
        epoch = await self._load_epoch(reader)
        check_epoch(epoch, cursor)
        after = cursor.position
        try:
            info: dict[str, Any] = await reader.xinfo_stream(self._keys.journal)
        except ResponseError:  # no journal yet: nothing durable was ever appended
            info = {}
        deleted = info.get("max-deleted-entry-id")
        if deleted is not None and Position.parse(deleted) > after:
            raise CursorUnavailable("expired")
        block_ms = max(1, min(int(wait_s * 1000), TAIL_BLOCK_MS))
        response = await reader.xread({self._keys.journal: str(after)}, block=block_ms, count=limit)
        batches: list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] = response or []  # type: ignore[assignment]
        return [self._event(epoch, entry_id, fields) for _stream, entries in batches for entry_id, fields in entries]

    def _event(self, epoch: str, entry_id: bytes, fields: dict[bytes, bytes], topic: str | None = None) -> Event:
        return Event.from_log(
            epoch,
            Position.parse(entry_id),
            topic if topic is not None else fields[b"t"].decode(),
            fields[b"y"].decode(),
            fields[b"e"],
        )

    async def tail(self) -> AsyncIterator[Event | LogGap]:
        reader = self._connection.blocking_reader()
        last: Position | None = None
        # The epoch of what this reader has delivered; an entry or key of another one is a gap.
        epoch: str | None = None
        backoff_s = 0.1
        next_gap_check = 0.0
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    if epoch is None:
                        epoch = await self._load_epoch(reader)
                    if last is None:
                        last = await self._last_position(reader)
                    if loop.time() >= next_gap_check:
                        next_gap_check = loop.time() + GAP_CHECK_S
                        trimmed = await self._trimmed_past(reader, last)
                        now_epoch = await self._load_epoch(reader)
                        if trimmed or now_epoch != epoch:
                            log.warning("event log reader lost its place in the firehose; dropping subscribers")
                            yield LOG_GAP
                            epoch = now_epoch
                            last = await self._last_position(reader)
                    response = await reader.xread(
                        {self._keys.firehose: str(last)}, block=TAIL_BLOCK_MS, count=TAIL_BATCH
                    )
                    backoff_s = 0.1
                    batches: list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] = response or []  # type: ignore[assignment]
                    for _stream, entries in batches:
                        for entry_id, fields in entries:
                            # (Entries written before epochs were tagged have no `p`.)
                            entry_epoch = fields.get(b"p", b"").decode() or epoch
                            if entry_epoch != epoch:
                                # The first event of a new epoch: Redis lost its data between
                                # this reader's last event and this one. Drop everyone, go on.
                                log.warning("event log epoch changed under the reader; dropping subscribers")
                                yield LOG_GAP
                                epoch = entry_epoch
                            event = self._event(epoch, entry_id, fields)
                            last = event.position
                            yield event
                except (RedisConnectionError, RedisTimeoutError, OSError) as error:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        # redis-py can turn a cancelled read into a connection error; a
                        # cancellation must never be swallowed, or shutdown hangs.
                        raise asyncio.CancelledError() from error
                    # Log, back off and go on; the gap check on the next pass tells whether
                    # anything was lost while Redis was away.
                    log.warning("event log reader: %s; retrying in %.1fs", error, backoff_s)
                    next_gap_check = 0.0
                    await asyncio.sleep(backoff_s)
                    backoff_s = min(backoff_s * 2, MAX_BACKOFF_S)
        finally:
            # Closing can wait on the cancelled in-flight XREAD; never let it hold up shutdown.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader.aclose(), CLOSE_TIMEOUT_S)

    async def _trimmed_past(self, reader: redis.Redis, last: Position) -> bool:
        info = await self._stream_info(reader)
        if info is None:
            return last != ORIGIN  # the firehose vanished under us
        deleted = info.get("max-deleted-entry-id")
        return deleted is not None and Position.parse(deleted) > last
