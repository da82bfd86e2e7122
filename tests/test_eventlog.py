"""One contract, both backends: the embedded log and Redis Streams (a real redis-server)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as redis

from app.infra.redis_keys import RedisKeys
from app.log.cursor import Cursor, InvalidCursor, Position
from app.log.eventlog import Append, CursorUnavailable, EventLog, LogGap
from app.log.eventlog_memory import MemoryEventLog
from app.log.events import Event, envelope_body

from .support import OwnRedisEventLog

LogFactory = Callable[..., EventLog]


# "redis-sharded": three log shards on one Redis (the one-order merge of app/log/redis_tail.py);
# tests/test_cluster.py runs them on a real Redis Cluster.
@pytest.fixture(params=["memory", "redis", "redis-sharded"])
async def make_log(request: pytest.FixtureRequest) -> AsyncIterator[LogFactory]:
    opened: list[EventLog] = []

    def make(retention_s: int = 3600, **options: Any) -> EventLog:
        log: EventLog
        if request.param == "memory":
            log = MemoryEventLog(retention_s=retention_s, **options)
        else:
            url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
            shards = 3 if request.param == "redis-sharded" else 1
            log = OwnRedisEventLog(url, prefix=prefix, retention_s=retention_s, shards=shards)
        opened.append(log)
        return log

    yield make
    for log in opened:
        await log.close()


def body(text: str) -> bytes:
    return envelope_body("response_posted", discussion_id="d1", user=None, payload={"text": text})


async def append_all(log: EventLog, items: list[tuple[str, str]]) -> list[Event]:
    return [await log.append(topic, "response_posted", body(text)) for topic, text in items]


def texts_of(append: Append) -> list[str]:
    return [json.loads(append.body)["payload"]["text"]]


def texts(events: list[Event]) -> list[str]:
    return [e.as_dict()["payload"]["text"] for e in events]


async def test_positions_increase_across_topics(make_log: LogFactory) -> None:
    log = make_log()
    await log.open()
    events = await append_all(log, [("d:a", "1"), ("d:b", "2"), ("d:a", "3"), ("u:x", "4")] * 25)
    positions = [e.position for e in events]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    assert all(Cursor.parse(e.cursor).epoch == log.epoch for e in events)
    assert events[0].as_dict()["id"] == events[0].cursor


async def test_read_after_merges_topics_in_order_and_excludes_the_cursor(make_log: LogFactory) -> None:
    log = make_log()
    await log.open()
    start = await log.head()
    events = await append_all(log, [("d:a", "a1"), ("d:b", "b1"), ("d:c", "c1"), ("d:a", "a2"), ("d:b", "b2")])
    everything = await log.read_after(["d:a", "d:b"], start, limit=100)
    assert texts(everything) == ["a1", "b1", "a2", "b2"]
    after_b1 = await log.read_after(["d:a", "d:b"], Cursor.parse(events[1].cursor), limit=100)
    assert texts(after_b1) == ["a2", "b2"]
    assert await log.read_after(["d:a"], Cursor.parse(events[-1].cursor), limit=100) == []
    assert await log.read_after(["d:nothing"], start, limit=100) == []


async def test_ephemeral_events_reach_the_tail_but_are_not_replayed(make_log: LogFactory) -> None:
    log = make_log()
    await log.open()
    start = await log.head()
    async with tailing(log) as received:
        await log.append("d:a", "typing_started", body("typing"), durable=False)
        await log.append("d:a", "response_posted", body("kept"))
        await wait_for(lambda: len(received) >= 2)
    assert [e.type for e in received if isinstance(e, Event)] == ["typing_started", "response_posted"]
    assert texts(await log.read_after(["d:a"], start, limit=100)) == ["kept"]


async def test_tail_yields_every_append_in_order(make_log: LogFactory) -> None:
    log = make_log()
    await log.open()
    async with tailing(log) as received:
        appended = await asyncio.gather(
            *(log.append(f"d:{i % 7}", "response_posted", body(str(i))) for i in range(200))
        )
        await wait_for(lambda: len(received) >= 200)
    positions = [e.position for e in received if isinstance(e, Event)]
    assert positions == sorted(e.position for e in appended)


async def test_unavailable_cursors(make_log: LogFactory) -> None:
    log = make_log()
    await log.open()
    await append_all(log, [("d:a", str(i)) for i in range(5)])
    head = await log.head()
    cases = {
        "unknown_epoch": Cursor("otherepoch", head.position),
        "unknown_position": Cursor(log.epoch, Position(head.position.ms + 60_000, 0)),
    }
    for reason, cursor in cases.items():
        with pytest.raises(CursorUnavailable) as caught:
            await log.read_after(["d:a"], cursor, limit=100)
        assert caught.value.reason == reason
    with pytest.raises(CursorUnavailable) as caught:
        await log.read_after(["d:a"], Cursor(log.epoch, Position(0, 0)), limit=3)
    assert caught.value.reason == "too_far_behind"
    with pytest.raises(InvalidCursor):
        Cursor.parse("not-a-cursor")


async def test_cursor_older_than_retention_is_expired(make_log: LogFactory) -> None:
    log = make_log(retention_s=1)
    await log.open()
    [old] = await append_all(log, [("d:a", "old")])
    await asyncio.sleep(1.2)
    await append_all(log, [("d:a", "new")])
    with pytest.raises(CursorUnavailable) as caught:
        await log.read_after(["d:a"], Cursor.parse(old.cursor), limit=100)
    assert caught.value.reason == "expired"


async def test_append_many_positions_each_topics_events_in_order_after_earlier_appends(make_log: LogFactory) -> None:
    log = make_log()
    await log.open()
    start = await log.head()
    [before] = await append_all(log, [("u:z", "before")])
    # More than one script call's worth (APPEND_BATCH), spread over topics of every shard.
    batch = [Append(f"u:{i % 7}", "notification", body(str(i))) for i in range(450)]
    batch.insert(100, Append("u:1", "activity", body("ephemeral"), durable=False))
    async with tailing(log) as received:
        appended = await log.append_many(batch)
        [after] = await append_all(log, [("u:z", "after")])
        await wait_for(lambda: any(isinstance(e, Event) and e.position == after.position for e in received))
    assert [(e.topic, e.type, texts([e])) for e in appended] == [(a.topic, a.event_type, texts_of(a)) for a in batch]
    assert all(Cursor.parse(e.cursor).epoch == log.epoch for e in appended)
    positions = [e.position for e in appended]
    assert len(set(positions)) == len(positions)
    assert before.position < min(positions) and max(positions) < after.position
    for topic in {a.topic for a in batch}:
        mine = [e.position for e in appended if e.topic == topic]
        assert mine == sorted(mine), topic
    # Stored and journaled as `append` would, the ephemeral one only on the tail; the tail
    # gives each event once.
    durable = [e for e in appended if e.type == "notification"]
    stored = await log.read_after([f"u:{i}" for i in range(7)], start, limit=1000)
    assert [e.cursor for e in stored] == [e.cursor for e in sorted(durable, key=lambda e: e.position)]
    assert [e.as_dict() for e in stored] == [e.as_dict() for e in sorted(durable, key=lambda e: e.position)]
    journal = await log.read_journal(start, 1000, 0.0)
    assert [e.cursor for e in journal] == [
        e.cursor for e in sorted([before, *durable, after], key=lambda e: e.position)
    ]
    live = [e.position for e in received if isinstance(e, Event) and e.topic.startswith("u:")]
    assert live == sorted([*positions, after.position])
    assert await log.append_many([]) == []


async def test_append_many_appends_at_most_once_per_dedupe_key(make_log: LogFactory) -> None:
    log = make_log()
    await log.open()
    start = await log.head()
    first = await log.append("d:a", "response_posted", body("x"), dedupe_key="outbox-1")
    appended = await log.append_many(
        [
            Append("d:a", "response_posted", body("x"), dedupe_key="outbox-1"),
            Append("d:a", "response_posted", body("y"), dedupe_key="outbox-2"),
            Append("d:b", "response_posted", body("z")),
            Append("d:a", "response_posted", body("y"), dedupe_key="outbox-2"),
        ]
    )
    assert appended[0].position == first.position
    assert appended[3].position == appended[1].position
    stored = await log.read_after(["d:a", "d:b"], start, limit=100)
    assert [e.position for e in stored] == sorted([first.position, appended[1].position, appended[2].position])
    assert texts(stored) == ["x", "y", "z"] or texts(stored) == ["x", "z", "y"]


async def test_memory_log_is_bounded_per_topic() -> None:
    log = MemoryEventLog(retention_s=3600, max_per_topic=10)
    start = await log.head()
    await append_all(log, [("d:a", str(i)) for i in range(25)])
    with pytest.raises(CursorUnavailable) as caught:
        await log.read_after(["d:a"], start, limit=100)
    assert caught.value.reason == "expired"
    assert len(log._topics["d:a"].events) == 10


async def test_redis_structures_are_trimmed_and_expire(redis_url: str, redis_prefix: str) -> None:
    log = OwnRedisEventLog(redis_url, prefix=redis_prefix, retention_s=30)
    await log.open()
    client = redis.Redis.from_url(redis_url)
    keys = RedisKeys(redis_prefix)
    try:
        await log.append("d:a", "response_posted", body("x"))
        await log.append("d:b", "typing_started", body("y"), durable=False)
        ttl_ms = await client.pttl(keys.topic("d:a"))
        assert 0 < ttl_ms <= 30_000
        assert not await client.exists(keys.topic("d:b"))  # ephemeral: firehose only
        assert await client.xlen(keys.firehose) == 2
    finally:
        await client.delete(keys.topic("d:a"), keys.firehose, keys.epoch)
        await client.aclose()
        await log.close()


@contextlib.asynccontextmanager
async def tailing(log: EventLog) -> AsyncIterator[list[Event | LogGap]]:
    received: list[Event | LogGap] = []

    async def read() -> None:
        async for item in log.tail():
            received.append(item)

    task = asyncio.create_task(read())
    try:
        await until_tail_reads(log, received)
        yield received
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until_tail_reads(log: EventLog, received: list[Event | LogGap], timeout_s: float = 10.0) -> None:
    """Until the tail is reading: the Redis reader starts from the end of the firehose, so what
    is appended before it has started is not its to yield. Appends a probe (ephemeral, on a topic
    of its own) until the tail yields the latest one, then forgets what it yielded so far."""
    async with asyncio.timeout(timeout_s):
        while True:
            probe = await log.append("probe", "typing_started", body("probe"), durable=False)
            for _ in range(20):
                if any(isinstance(e, Event) and e.position == probe.position for e in received):
                    received.clear()
                    return
                await asyncio.sleep(0.01)


async def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)
