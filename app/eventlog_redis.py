"""The event log on Redis Streams, shared by any number of processes and servers.

Layout (keys from `app.redis_keys`): each topic is a stream trimmed by age to the retention
window (`XADD … MINID ~`) and expiring when idle; the *firehose* is one more stream holding
every event for a short window. `append.lua` writes both atomically and gives the event the
firehose's ID as its position in both, so positions form one global order (see
`app.cursor`). Each process runs one blocking `XREAD` on the firehose (`tail`), on a connection
of its own, and fans out in memory: Redis sees one reader per process, never one per client.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import secrets
from collections.abc import AsyncIterator, Collection
from importlib import resources
from typing import Any

import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .cursor import ORIGIN, Cursor, Position
from .eventlog import LOG_GAP, CursorUnavailable, LogGap, check_epoch
from .events import Event
from .redis_keys import RedisKeys

log = logging.getLogger(__name__)

FIREHOSE_WINDOW_S = 60
# Shorter than the reader connection's socket timeout (PITFALLS: redis-py 8 defaults to 5 s).
TAIL_BLOCK_MS = 5_000
TAIL_SOCKET_TIMEOUT_S = 15.0
TAIL_BATCH = 1_000
# How often the reader checks that the firehose was not trimmed past its place.
GAP_CHECK_S = 5.0
MAX_BACKOFF_S = 5.0

_APPEND_LUA = resources.files("app").joinpath("lua/append.lua").read_text()


class RedisEventLog:
    def __init__(self, url: str, *, prefix: str, retention_s: int) -> None:
        self._url = url
        self._keys = RedisKeys(prefix)
        self._retention_ms = retention_s * 1000
        self._window_ms = FIREHOSE_WINDOW_S * 1000
        self.epoch = ""
        self._client: redis.Redis = redis.Redis.from_url(url)
        self._append = self._client.register_script(_APPEND_LUA)

    async def open(self) -> None:
        await self._client.set(self._keys.epoch, secrets.token_hex(4), nx=True)
        epoch: bytes = await self._client.get(self._keys.epoch)  # type: ignore[assignment]
        self.epoch = epoch.decode()

    async def close(self) -> None:
        await self._client.aclose()

    async def ping(self) -> None:
        await self._client.ping()

    async def append(self, topic: str, event_type: str, body: bytes, *, durable: bool = True) -> Event:
        position = await self._append(
            keys=[self._keys.firehose, self._keys.topic(topic)],
            args=[topic, event_type, body, self._retention_ms, self._window_ms, "1" if durable else "0"],
        )
        return Event.from_log(self.epoch, Position.parse(position), topic, event_type, body)

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
        return Cursor(self.epoch, await self._last_position(self._client))

    async def read_after(self, topics: Collection[str], cursor: Cursor, limit: int) -> list[Event]:
        check_epoch(self.epoch, cursor)
        after = cursor.position
        names = list(topics)
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.time()
            for name in names:
                # Exclusive start "(" needs Redis 6.2; one more than the limit tells "too far".
                pipe.xrange(self._keys.topic(name), min=f"({after}", max="+", count=limit + 1)
            results = await pipe.execute()
        seconds, micros = results[0]
        now_ms = seconds * 1000 + micros // 1000
        last = await self._last_position(self._client)
        if after > last:
            raise CursorUnavailable("unknown_position")
        # A cursor at the head misses nothing, however old it is (an idle log's head), and the
        # origin is the head a fresh, empty log hands out: neither is "expired" by its age.
        if after != ORIGIN and after < last and after.ms < now_ms - self._retention_ms:
            raise CursorUnavailable("expired")
        runs = []
        for name, entries in zip(names, results[1:], strict=True):
            if len(entries) > limit:
                raise CursorUnavailable("too_far_behind")
            runs.append([self._event(entry_id, fields, name) for entry_id, fields in entries])
        merged = list(heapq.merge(*runs, key=lambda event: event.position))
        if len(merged) > limit:
            raise CursorUnavailable("too_far_behind")
        return merged

    def _event(self, entry_id: bytes, fields: dict[bytes, bytes], topic: str | None = None) -> Event:
        return Event.from_log(
            self.epoch,
            Position.parse(entry_id),
            topic if topic is not None else fields[b"t"].decode(),
            fields[b"y"].decode(),
            fields[b"e"],
        )

    async def tail(self) -> AsyncIterator[Event | LogGap]:
        reader = redis.Redis.from_url(
            self._url, socket_timeout=TAIL_SOCKET_TIMEOUT_S, socket_connect_timeout=TAIL_SOCKET_TIMEOUT_S
        )
        last: Position | None = None
        backoff_s = 0.1
        next_gap_check = 0.0
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    if last is None:
                        last = await self._last_position(reader)
                    if loop.time() >= next_gap_check:
                        next_gap_check = loop.time() + GAP_CHECK_S
                        if await self._trimmed_past(reader, last):
                            log.warning("event log reader fell behind the firehose window; dropping subscribers")
                            yield LOG_GAP
                            last = await self._last_position(reader)
                    response = await reader.xread(
                        {self._keys.firehose: str(last)}, block=TAIL_BLOCK_MS, count=TAIL_BATCH
                    )
                    backoff_s = 0.1
                    batches: list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] = response or []  # type: ignore[assignment]
                    for _stream, entries in batches:
                        for entry_id, fields in entries:
                            event = self._event(entry_id, fields)
                            last = event.position
                            yield event
                except (RedisConnectionError, RedisTimeoutError, OSError) as error:
                    # Log, back off and go on; the gap check on the next pass tells whether
                    # anything was lost while Redis was away.
                    log.warning("event log reader: %s; retrying in %.1fs", error, backoff_s)
                    next_gap_check = 0.0
                    await asyncio.sleep(backoff_s)
                    backoff_s = min(backoff_s * 2, MAX_BACKOFF_S)
        finally:
            with contextlib.suppress(Exception):
                await reader.aclose()

    async def _trimmed_past(self, reader: redis.Redis, last: Position) -> bool:
        info = await self._stream_info(reader)
        if info is None:
            return last != ORIGIN  # the firehose vanished under us
        deleted = info.get("max-deleted-entry-id")
        return deleted is not None and Position.parse(deleted) > last
