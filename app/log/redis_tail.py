"""Each process's one reader of the Redis log: every shard's firehose, merged into one order.

One shard (the default): one blocking XREAD on its firehose, every entry released as read,
exactly as before sharding. Several: positions are unique across shards (a shard's sequence
numbers are congruent to its index) but each shard's firehose is only ordered within itself,
and the hub, its subscriptions and every cursor rely on one global order. So the tail keeps
what it read in a heap and releases an event only when every shard has shown an entry at or
after its position: a shard's stream IDs only grow, so nothing earlier can still come from it.
A shard that has nothing to show is asked for a *tick* (`tick.lua`: an entry with no topic at
the wanted position, unless it already has a later one), which also makes that shard's next
appends come after it (one Lamport clock for the log; docs/SCALING.md "One order across shards").

How it reads: on one Redis, one blocking XREAD names every shard's firehose. On a Redis Cluster
a multi-key XREAD is refused across hash slots (even on one node), and each shard is its own
slot by design, so there it is one blocking XREAD per shard, each on its own task, the first to
answer handled first. A shard with `MAX_PENDING` events waiting for the others is not read
until they catch up (bounded memory; a cluster missing a master stops anyway).

Gaps: an entry of a new epoch (the shard lost its data), a firehose trimmed past the reader's
place or gone back behind it (a failover that lost writes) yields `LOG_GAP` (the hub drops its
subscribers, who resume by cursor), and the shard is read again from what it still has.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

from redis.exceptions import RedisError

from app.infra.redis_cluster import AnyRedis
from app.infra.redis_keys import LogShardKeys
from app.log.cursor import ORIGIN, Position
from app.log.direct_read import DirectReads, Entry
from app.log.eventlog import LOG_GAP, LogGap
from app.log.events import Event
from app.log.log_epochs import log_epoch

log = logging.getLogger(__name__)

TAIL_BLOCK_MS = 5_000
TAIL_BATCH = 1_000
# Events of one shard read and waiting for the other shards; beyond it the shard is not read.
MAX_PENDING = 4 * TAIL_BATCH
# How often the reader checks that no firehose was trimmed past its place or lost its data.
GAP_CHECK_S = 5.0
MAX_BACKOFF_S = 5.0
CLOSE_TIMEOUT_S = 1.0


class TailSource(Protocol):
    """What the tail needs of `RedisEventLog`."""

    shards: list[LogShardKeys]
    cluster: bool
    seen: Position

    @property
    def client(self) -> AnyRedis: ...

    def reader(self) -> AnyRedis: ...

    async def load_epoch(self, client: AnyRedis, shard: int) -> str: ...

    async def tick(self, shard: int, position: Position) -> None: ...

    async def stream_info(self, client: AnyRedis, key: str) -> dict[str, Any] | None: ...

    async def last_position(self, client: AnyRedis, shard: int) -> Position: ...

    def event(self, epoch: str, entry_id: bytes, fields: dict[bytes, bytes]) -> Event: ...


class ShardedTail:
    def __init__(self, source: TailSource, start: Position | None = None) -> None:
        """`start`: read from there instead of from the present (bench/log_shards.py)."""
        self._source = source
        self._start = start
        count = len(source.shards)
        self._count = count
        # Which shards one blocking XREAD names: all of them on one Redis, one on a cluster.
        self._groups = [[shard] for shard in range(count)] if source.cluster else [list(range(count))]
        self._tags: list[str] = [""] * count
        self._read: list[Position] = [ORIGIN] * count  # the newest entry read from each shard
        self._ticked: list[Position] = [ORIGIN] * count
        self._pending: list[tuple[Position, int, bytes, dict[bytes, bytes]]] = []
        self._pending_count = [0] * count
        self._fetches: dict[int, asyncio.Task[list[tuple[int, list[Entry]]]]] = {}
        self._direct: DirectReads | None = None  # on one Redis: XREAD past redis-py's command path
        self._firehoses = {keys.firehose.encode(): index for index, keys in enumerate(source.shards)}

    async def run(self) -> AsyncIterator[Event | LogGap]:
        reader = self._source.reader()
        if not self._source.cluster:
            self._direct = DirectReads(reader)  # type: ignore[arg-type]  # not a cluster: a Redis
        loop = asyncio.get_running_loop()
        backoff_s = 0.1
        next_gap_check = 0.0
        loaded = False
        try:
            while True:
                try:
                    if not loaded:
                        for shard in range(self._count):
                            self._tags[shard] = await self._source.load_epoch(reader, shard)
                            start = self._start
                            self._read[shard] = start or await self._source.last_position(reader, shard)
                        loaded = True
                    if loop.time() >= next_gap_check:
                        next_gap_check = loop.time() + GAP_CHECK_S
                        if await self._check_gaps():
                            yield LOG_GAP
                    read = await self._read_some(reader)
                    backoff_s = 0.1
                    for shard, entries in read:
                        if self._take(shard, entries):
                            yield LOG_GAP
                    for event in self._release():
                        yield event
                    await self._tick_laggards()
                except (RedisError, OSError) as error:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        # redis-py can turn a cancelled read into a connection error; a
                        # cancellation must never be swallowed, or shutdown hangs.
                        raise asyncio.CancelledError() from error
                    # Log, back off and go on; the gap check on the next pass tells whether
                    # anything was lost while Redis was away (or a failover went on).
                    log.warning("event log reader: %s; retrying in %.1fs", error, backoff_s)
                    await self._cancel_fetches()
                    next_gap_check = 0.0
                    await asyncio.sleep(backoff_s)
                    backoff_s = min(backoff_s * 2, MAX_BACKOFF_S)
        finally:
            await self._cancel_fetches()
            if self._direct is not None:
                await self._direct.close()
            # Closing can wait on the cancelled in-flight XREAD; never let it hold up shutdown.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader.aclose(), CLOSE_TIMEOUT_S)

    async def _read_some(self, reader: AnyRedis) -> list[tuple[int, list[Entry]]]:
        """What the next blocking read(s) bring, per shard. One XREAD names every shard (one
        Redis): awaited here, without a task and a wait around it, which cost each event a
        turn or two of the loop (issue 13). A read per shard (a cluster): the first to answer."""
        if len(self._groups) == 1:
            wanted = self._wanted(self._groups[0])
            return await self._fetch(reader, wanted) if wanted else []
        self._start_fetches(reader)
        if not self._fetches:
            return []
        done, _ = await asyncio.wait(self._fetches.values(), timeout=GAP_CHECK_S, return_when=asyncio.FIRST_COMPLETED)
        read: list[tuple[int, list[Entry]]] = []
        for group, fetch in list(self._fetches.items()):
            if fetch in done:
                del self._fetches[group]
                read += fetch.result()
        return read

    def _wanted(self, group: list[int]) -> dict[str, str]:
        """The group's firehoses to read, and from where (not a shard with too much waiting)."""
        return {
            self._source.shards[shard].firehose: str(self._read[shard])
            for shard in group
            if self._pending_count[shard] < MAX_PENDING
        }

    def _start_fetches(self, reader: AnyRedis) -> None:
        for index, group in enumerate(self._groups):
            if index in self._fetches:
                continue
            wanted = self._wanted(group)
            if wanted:
                self._fetches[index] = asyncio.create_task(self._fetch(reader, wanted))

    async def _fetch(self, reader: AnyRedis, wanted: dict[str, str]) -> list[tuple[int, list[Entry]]]:
        batches: list[tuple[bytes, list[Entry]]]
        if self._direct is not None:
            batches = await self._direct.xread(wanted, block_ms=TAIL_BLOCK_MS, count=TAIL_BATCH)
        else:
            response = await reader.xread(wanted, block=TAIL_BLOCK_MS, count=TAIL_BATCH)  # type: ignore[arg-type]
            batches = response or []  # type: ignore[assignment]
        return [(self._firehoses[key if isinstance(key, bytes) else key.encode()], entries) for key, entries in batches]

    async def _cancel_fetches(self) -> None:
        tasks = list(self._fetches.values())
        self._fetches.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    def _take(self, shard: int, entries: list[Entry]) -> bool:
        """Queue a shard's entries; True when one is of a new epoch (a gap, *before* it)."""
        gap = False
        for entry_id, fields in entries:
            # (Entries written before epochs were tagged have no `p`.)
            tag = fields.get(b"p", b"").decode() or self._tags[shard]
            if tag != self._tags[shard]:
                # The first entry of a new epoch: the shard lost its data between this reader's
                # last entry and this one. Drop everyone, go on in the new epoch.
                log.warning("event log epoch of shard %d changed under the reader; dropping subscribers", shard)
                self._tags[shard] = tag
                self._forget(shard)
                gap = True
            position = Position.parse(entry_id)
            self._read[shard] = position
            if position > self._source.seen:
                self._source.seen = position
            if b"t" in fields:  # (a tick has no topic: it only moves the shard's position)
                heapq.heappush(self._pending, (position, shard, entry_id, fields))
                self._pending_count[shard] += 1
        return gap

    def _release(self) -> list[Event]:
        """The waiting events no shard can still precede, in position order."""
        floor = min(self._read)
        pending = self._pending
        epoch = log_epoch(self._tags)
        released = []
        while pending and pending[0][0] <= floor:
            _position, shard, entry_id, fields = heapq.heappop(pending)
            self._pending_count[shard] -= 1
            released.append(self._source.event(epoch, entry_id, fields))
        return released

    async def _tick_laggards(self) -> None:
        """Ask each shard behind the newest waiting event to show a position past it."""
        if not self._pending:
            return
        newest = max(self._pending)[0]
        laggards = [s for s in range(self._count) if self._read[s] < newest and self._ticked[s] < newest]
        for shard in laggards:
            self._ticked[shard] = newest
        try:
            await asyncio.gather(*(self._source.tick(shard, newest) for shard in laggards))
        except BaseException:
            for shard in laggards:  # not ticked after all: ask again on the next pass
                self._ticked[shard] = ORIGIN
            raise

    def _forget(self, shard: int) -> None:
        """Drop what is waiting from a shard whose data is gone."""
        self._pending = [item for item in self._pending if item[1] != shard]
        heapq.heapify(self._pending)
        self._pending_count[shard] = 0
        self._ticked[shard] = ORIGIN

    async def _check_gaps(self) -> bool:
        """Whether a shard's firehose lost entries this reader had not read (trimmed past its
        place), went back behind it (lost writes), or lost its data (new epoch). Such a shard
        is read again from what it still has."""
        gap = False
        client = self._source.client
        for shard, keys in enumerate(self._source.shards):
            info = await self._source.stream_info(client, keys.firehose)
            tag = await self._source.load_epoch(client, shard)
            read = self._read[shard]
            restart: Position | None = None
            if tag != self._tags[shard]:
                restart = ORIGIN
            elif info is None:
                restart = ORIGIN if read != ORIGIN else None
            else:
                deleted = info.get("max-deleted-entry-id")
                last = Position.parse(info["last-generated-id"])
                if deleted is not None and Position.parse(deleted) > read:
                    restart = Position.parse(deleted)
                elif last < read:
                    restart = last
            if restart is not None:
                log.warning("event log reader lost its place in shard %d's firehose; dropping subscribers", shard)
                self._tags[shard] = tag
                self._read[shard] = restart
                self._forget(shard)
                await self._cancel_fetches()
                gap = True
        return gap
