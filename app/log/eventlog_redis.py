"""The event log on Redis Streams, shared by any number of processes and servers.

Layout (keys from `app.infra.redis_keys`): the log is split into `shards` shards (one by
default), a topic living in the shard its name hashes to. Each topic is a stream trimmed by age
to the retention window (`XADD … MINID ~`) and expiring when idle; each shard's *firehose* is
one more stream holding every event of the shard for a short window, its *journal* every
durable one for the retention window. `append.lua` writes the firehose, the topic and the
journal of one shard atomically (one hash slot: the shard's keys share a hash tag, so shards
can live on different Redis Cluster masters) and gives the event the firehose's ID as its
position everywhere; one call takes one event or, for `append_many`, up to `APPEND_BATCH`
events of the shard, positioned in the order given. Positions form one global order across shards (`app.log.cursor`,
docs/SCALING.md "One order across shards"): each process's tail (`app.log.redis_tail`) merges
the shards and releases an event only once every shard has shown a later position.

When Redis loses its data (restarted without persistence, flushed), a shard's streams and its
epoch key vanish together. Nothing may then pretend the history is intact, and every process
must agree on what comes next:

- `append.lua` checks the epoch the caller believes in against the shard's key, in the same
  script as the XADD. A missing key is re-minted there, once (GET then SET inside one script:
  the first process to get there wins); a caller whose epoch differs appends nothing, adopts the
  current epoch from the reply and tries again. No event ever enters the new log under the
  old epoch.
- Every read that hands out or accepts cursors (`read_after`, `head`, `read_journal`) reads the
  epoch keys in the same round trips as the data, so a cursor of the old epoch gets
  `CursorUnavailable("unknown_epoch")`: the client's `sync_required` (`app.log.log_epochs`).
- Each firehose entry carries its epoch's tag (`p`); the tail yields `LOG_GAP` *before* the
  first event of a new epoch, and its periodic gap check reads the keys too, for a loss
  followed by no append.

Servers started later read the keys the survivors re-minted, so cross-server resume keeps
working. A Redis restarted *with* its data (AOF or RDB) keeps the key: same epoch, readers
resume exactly. The epoch keys have no TTL, so `volatile-*` eviction never takes them; under an
`allkeys-*` policy an evicted key costs every client one needless `sync_required`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import secrets
import time
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.exceptions import RedisError, ResponseError

from app.infra.batching import GroupCommit
from app.infra.redis_cluster import AnyRedis, AnyRedisConnection, RedisClusterConnection
from app.infra.redis_connection import time_ms
from app.infra.redis_keys import LogShardKeys, RedisKeys, shard_of
from app.log.cursor import ORIGIN, Cursor, Position
from app.log.eventlog import LOG_GAP, Append, CursorUnavailable, LogGap, retention_passed
from app.log.events import Event
from app.log.log_epochs import LogEpochs
from app.log.redis_journal import read_journal
from app.log.redis_replicated import NotReplicated, append_replicated
from app.log.redis_tail import ShardedTail, TailSource

FIREHOSE_WINDOW_S = 60
# Catch-up reads per pipeline (each names ~3 topics).
CATCH_UP_BATCH = 300

_APPEND_LUA = resources.files("app").joinpath("lua/append.lua").read_text()
_EPOCH_LUA = resources.files("app").joinpath("lua/epoch.lua").read_text()
_TICK_LUA = resources.files("app").joinpath("lua/tick.lua").read_text()
# The append script refuses an epoch that changed; after adopting the new one, try again.
APPEND_ATTEMPTS = 3
# Events per append script call (`append_many`): Redis runs nothing else while a script runs.
# Measured (private redis-server, notification-sized events): ~7.5 us of Redis per event, so
# ~0.8 ms held per call; the client's cost per event is flat from ~50 events on (~25 us).
APPEND_BATCH = 100

__all__ = ["LOG_GAP", "EpochChanged", "NotReplicated", "RedisEventLog"]


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


@dataclass(slots=True)
class _ShardRead:
    """What one shard said in one round trip: its epoch, its firehose's newest position (the
    shard will never give a position at or below it again), then the ranges asked for."""

    epoch_value: str
    last: Position
    now_ms: int
    results: dict[tuple[str, Position, int], Any]


class RedisEventLog(TailSource):
    def __init__(
        self, connection: AnyRedisConnection, *, prefix: str, retention_s: int, shards: int = 1, wait_replicas: int = 0
    ) -> None:
        """`connection`: the process's shared `RedisConnection`, or the log's own (a cluster's,
        `PARLEY_LOG_REDIS_URL`); its owner closes it, not the log."""
        self._connection = connection
        # Durable appends wait until this many replicas have them (0: Redis's asynchronous
        # replication, the default; a failover may then lose the last acknowledged writes).
        self._wait_replicas = wait_replicas
        self.cluster = isinstance(connection, RedisClusterConnection)
        self.shards: list[LogShardKeys] = RedisKeys(prefix).log_shards(shards, cluster=self.cluster)
        self._retention_ms = retention_s * 1000
        self.window_ms = FIREHOSE_WINDOW_S * 1000
        self.epochs = LogEpochs(shards)
        # The newest position this process appended or read live: with several shards, what it
        # appends next comes after it (a Lamport clock: causal order survives the sharding).
        self.seen = ORIGIN
        self._client: AnyRedis = connection.client
        # A cluster client refuses a command past its pool's size: the connection's semaphore
        # makes the excess wait. (One Redis: its blocking pool waits.)
        self._commands: contextlib.AbstractAsyncContextManager[Any] = (
            connection.commands if isinstance(connection, RedisClusterConnection) else contextlib.nullcontext()
        )
        self._append = self._client.register_script(_APPEND_LUA)
        self._epoch_script = self._client.register_script(_EPOCH_LUA)
        self._tick = self._client.register_script(_TICK_LUA)
        # `read_journal` blocks: on a connection of its own.
        self.journal_reader = connection.blocking_reader()
        self._catch_up: GroupCommit[_CatchUp, list[Event]] = GroupCommit(self._read_batch, max_batch=CATCH_UP_BATCH)

    @property
    def epoch(self) -> str:
        return self.epochs.epoch

    @property
    def client(self) -> AnyRedis:
        """The connection's pool (appends, catch-up reads)."""
        return self._client

    def reader(self) -> AnyRedis:
        return self._connection.blocking_reader()

    async def open(self) -> None:
        for shard in range(len(self.shards)):
            await self.load_epoch(self._client, shard)

    async def load_epoch(self, client: AnyRedis, shard: int) -> str:
        """Adopt a shard's epoch, minting it if Redis has none (new, or it lost its data: then
        every older cursor becomes `sync_required`, as it must, since its events are gone).
        Returns the shard's tag."""
        value = await self._epoch_script(keys=[self.shards[shard].epoch], args=[secrets.token_hex(4)], client=client)
        self.epochs.adopt(shard, value)
        return self.epochs.values[shard].partition(".")[0]

    def _tick_args(self, shard: int, position: Position) -> list[str | int]:
        return [position.ms, position.seq, self.window_ms, secrets.token_hex(4), shard, len(self.shards)]

    async def tick(self, shard: int, position: Position) -> None:
        keys = self.shards[shard]
        async with self._commands:
            await self._tick(keys=[keys.firehose, keys.epoch, keys.last], args=self._tick_args(shard, position))

    async def close(self) -> None:
        await self._catch_up.close()
        await self.journal_reader.aclose()

    async def ping(self) -> None:
        await self._client.ping()

    async def append(
        self, topic: str, event_type: str, body: bytes, *, durable: bool = True, dedupe_key: str | None = None
    ) -> Event:
        [event] = await self._append_run(
            shard_of(topic, len(self.shards)), [Append(topic, event_type, body, durable, dedupe_key)]
        )
        return event

    async def append_many(self, appends: Sequence[Append]) -> list[Event]:
        """The batch in one script call per shard and `APPEND_BATCH` events (the shards at
        once): each topic lives in one shard, whose calls go one after another, in order."""
        count = len(self.shards)
        if count == 1:
            return await self._append_run(0, appends)
        by_shard: dict[int, list[int]] = {}
        for index, append in enumerate(appends):
            by_shard.setdefault(shard_of(append.topic, count), []).append(index)
        runs = list(by_shard.items())
        results = await asyncio.gather(
            *(self._append_run(shard, [appends[i] for i in indexes]) for shard, indexes in runs),
            return_exceptions=True,
        )
        placed: dict[int, Event] = {}
        for (_, indexes), result in zip(runs, results, strict=True):
            if isinstance(result, BaseException):
                raise result  # (the other shards' calls have finished: none is left running)
            placed.update(zip(indexes, result, strict=True))
        return [placed[index] for index in range(len(appends))]

    async def _append_run(self, shard: int, appends: Sequence[Append]) -> list[Event]:
        """Append to one shard, in order, `APPEND_BATCH` at a time (a script holds Redis while
        it runs: a bounded batch keeps other clients' commands from waiting long)."""
        events: list[Event] = []
        for first in range(0, len(appends), APPEND_BATCH):
            events += await self._append_batch(shard, appends[first : first + APPEND_BATCH])
        return events

    async def _append_batch(self, shard: int, appends: Sequence[Append]) -> list[Event]:
        shard_keys = self.shards[shard]
        keys = [shard_keys.firehose, shard_keys.journal, shard_keys.epoch, shard_keys.last]
        for append in appends:
            keys += [shard_keys.topic(append.topic), shard_keys.dedupe(append.dedupe_key or "")]
        durable = any(append.durable for append in appends)
        for _ in range(APPEND_ATTEMPTS):
            expected = self.epochs.values[shard]  # what the script checks, whatever others adopt meanwhile
            args: list[str | int | bytes] = [
                self._retention_ms,
                self.window_ms,
                expected,
                secrets.token_hex(4),
                shard,
                len(self.shards),
                self.seen.ms,
                self.seen.seq,
            ]
            for append in appends:
                args += [
                    append.topic,
                    append.event_type,
                    append.body,
                    "1" if append.durable else "0",
                    "1" if append.dedupe_key else "0",
                ]
            async with self._commands:
                if self._wait_replicas and durable:
                    reply = await append_replicated(self._client, self._append, keys, args, self._wait_replicas)
                else:
                    reply = await self._append(keys=keys, args=args)
            status, *values = reply
            if status == b"ok":
                positions = [Position.parse(value) for value in values]
                self.seen = max(self.seen, *positions)
                epoch = self.epochs.epoch_with(shard, expected)
                return [
                    Event.from_log(epoch, position, a.topic, a.event_type, a.body)
                    for position, a in zip(positions, appends, strict=True)
                ]
            self.epochs.adopt(shard, values[0])  # the shard lost its data and has a new epoch: append in that one
        raise EpochChanged("the event log's epoch kept changing")

    async def stream_info(self, client: AnyRedis, key: str) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] = await client.xinfo_stream(key)
        except ResponseError:  # no such key: nothing was ever appended
            return None
        return info

    async def last_position(self, client: AnyRedis, shard: int) -> Position:
        info = await self.stream_info(client, self.shards[shard].firehose)
        return ORIGIN if info is None else Position.parse(info["last-generated-id"])

    async def read_shards(self, ranges: Sequence[tuple[str, Position, int]]) -> list[_ShardRead]:
        """Every shard's epoch and newest position, and the given (stream key, after, limit)
        ranges of it, one round trip per shard, all shards at once. A cursor is checked against
        the epoch read in the same round trip as its events, not against `self.epoch`, which
        another process may have moved on from before this one noticed."""
        return list(await asyncio.gather(*(self._read_shard(index, ranges) for index in range(len(self.shards)))))

    async def _read_shard(self, index: int, ranges: Sequence[tuple[str, Position, int]]) -> _ShardRead:
        keys = self.shards[index]
        mine = [(key, after, limit) for key, after, limit in ranges if key.startswith(keys.base + ":")]
        sharded = len(self.shards) > 1
        async with self._commands, self._client.pipeline(transaction=False) as pipe:
            if sharded:
                # Several shards: first make this one show a position past all this process has
                # seen, so the reads below hold every event up to it (docs/SCALING.md). EVAL,
                # not EVALSHA: a new master after a failover may not have the script cached.
                pipe.eval(_TICK_LUA, 3, keys.firehose, keys.epoch, keys.last, *self._tick_args(index, self.seen))
            # The epoch first: if Redis lost its data, the ranges below are of the new epoch,
            # and cursors of the old one must be refused, not served from them.
            pipe.get(keys.epoch)
            pipe.xinfo_stream(keys.firehose)
            if not self.cluster:
                pipe.time()  # (a cluster has a clock per node: there, this process's clock)
            for key, after, limit in mine:
                # Exclusive start "(" needs Redis 6.2; one more than the limit tells "too far".
                pipe.xrange(key, min=f"({after}", max="+", count=limit + 1)
            replies = await pipe.execute(raise_on_error=False)
        if sharded:
            ticked, *replies = replies
            if isinstance(ticked, Exception):
                raise ticked
        epoch_value, info, *results = replies
        if self.cluster:
            now_ms = time.time_ns() // 1_000_000
        else:
            clock, *results = results
            now_ms = time_ms(clock)
        for result in (epoch_value, *results):
            if isinstance(result, Exception):
                raise result
        if epoch_value is None:  # the shard lost its data: mint its new epoch (refusing old cursors)
            await self.load_epoch(self._client, index)
        else:
            self.epochs.adopt(index, epoch_value)
        if isinstance(info, ResponseError):
            last = ORIGIN  # no firehose: nothing was ever appended
        elif isinstance(info, Exception):
            raise info
        else:
            last = Position.parse(info["last-generated-id"])
        return _ShardRead(self.epochs.values[index], last, now_ms, dict(zip(mine, results, strict=True)))

    async def head(self) -> Cursor:
        reads = await self.read_shards(())
        return Cursor(self.epoch, min(read.last for read in reads))

    async def read_after(self, topics: Collection[str], cursor: Cursor, limit: int) -> list[Event]:
        return await self._catch_up.submit(_CatchUp(tuple(topics), cursor, limit))

    def _topic_key(self, topic: str) -> str:
        return self.shards[shard_of(topic, len(self.shards))].topic(topic)

    async def _read_batch(self, requests: Sequence[_CatchUp]) -> list[list[Event] | BaseException]:
        """Every catch-up read waiting right now, in one round trip per shard: the epochs, the
        shards' heads, and each distinct (topic, position) range once. After a restart, the
        readers of one discussion mostly resume from the same position: one XRANGE serves them all."""
        ranges = list(dict.fromkeys((self._topic_key(topic), r.after, r.limit) for r in requests for topic in r.topics))
        reads = await self.read_shards(ranges)
        read: dict[tuple[str, Position, int], Any] = {}
        for shard_read in reads:
            read.update(shard_read.results)
        # Every shard has given every position up to the least of their heads: only events up
        # to it are certain to have no earlier one still to come (docs/SCALING.md).
        last = min(shard_read.last for shard_read in reads)
        return [self._caught_up(request, read, self.epoch, last, reads[0].now_ms) for request in requests]

    def _caught_up(
        self, request: _CatchUp, read: dict[tuple[str, Position, int], Any], epoch: str, last: Position, now_ms: int
    ) -> list[Event] | BaseException:
        after, limit = request.after, request.limit
        if request.cursor.epoch != epoch:
            return CursorUnavailable("unknown_epoch")
        if after > last:
            return CursorUnavailable("unknown_position")
        if retention_passed(after, last, self.epochs.created_ms, now_ms, self._retention_ms):
            return CursorUnavailable("expired")
        runs = []
        for topic in request.topics:
            entries = read[(self._topic_key(topic), after, limit)]
            if len(entries) > limit:
                return CursorUnavailable("too_far_behind")
            runs.append(
                [
                    self._event(epoch, entry_id, fields, topic)
                    for entry_id, fields in entries
                    if Position.parse(entry_id) <= last
                ]
            )
        merged = list(heapq.merge(*runs, key=lambda event: event.position))
        if len(merged) > limit:
            return CursorUnavailable("too_far_behind")
        return merged

    async def read_journal(self, cursor: Cursor, limit: int, wait_s: float) -> list[Event]:
        return await read_journal(self, cursor, limit, wait_s)

    def _event(self, epoch: str, entry_id: bytes, fields: dict[bytes, bytes], topic: str | None = None) -> Event:
        return Event.from_log(
            epoch,
            Position.parse(entry_id),
            topic if topic is not None else fields[b"t"].decode(),
            fields[b"y"].decode(),
            fields[b"e"],
        )

    def event(self, epoch: str, entry_id: bytes, fields: dict[bytes, bytes]) -> Event:
        return self._event(epoch, entry_id, fields)

    def tail(self) -> AsyncIterator[Event | LogGap]:
        return ShardedTail(self).run()
