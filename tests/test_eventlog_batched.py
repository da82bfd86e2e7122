"""`RedisEventLog.read_after` as a group commit, on a real redis-server: concurrent catch-up
reads share pipelines (and identical ranges), yet each caller gets exactly what it would get
alone, including its own `CursorUnavailable`.

That reads were batched is checked from Redis's own command counts (`INFO commandstats`), on a
redis-server of this module's own so no other client's commands are counted.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as redis

from app.log.cursor import Cursor, Position
from app.log.eventlog import CursorUnavailable
from app.log.eventlog_redis import RedisEventLog
from app.log.events import Event

from .support import OwnRedisEventLog, private_redis
from .test_eventlog import append_all

WAIT_S = 20.0
TOPICS = ["d:a", "d:b", "d:c", "u:x"]


@pytest.fixture(scope="module")
def own_redis() -> Iterator[str]:
    with private_redis() as url:
        yield url


@pytest.fixture
async def log(own_redis: str, redis_prefix: str) -> AsyncIterator[RedisEventLog]:
    made = OwnRedisEventLog(own_redis, prefix=redis_prefix, retention_s=3600)
    await made.open()
    yield made
    await made.close()


async def command_calls(url: str) -> dict[str, int]:
    """Calls per command so far (subcommands folded into their command: XINFO|STREAM -> xinfo)."""
    client = redis.Redis.from_url(url)
    try:
        stats: dict[str, Any] = await client.info("commandstats")
    finally:
        await client.aclose()
    calls: dict[str, int] = {}
    for name, values in stats.items():
        command = name.removeprefix("cmdstat_").split("|")[0]
        calls[command] = calls.get(command, 0) + int(values["calls"])
    return calls


def summary(outcome: list[Event] | BaseException) -> Any:
    """What a caller got, comparably: its events' (cursor, topic, type, body), or the reason."""
    if isinstance(outcome, CursorUnavailable):
        return ("unavailable", outcome.reason)
    if isinstance(outcome, BaseException):
        return ("error", repr(outcome))
    return [(e.cursor, e.topic, e.type, e.envelope) for e in outcome]


async def test_concurrent_catch_up_reads_get_what_each_would_get_alone(log: RedisEventLog, own_redis: str) -> None:
    start = await log.head()
    events = await append_all(log, [(TOPICS[i % 4], f"e{i}") for i in range(80)])
    cursors = [start] + [Cursor.parse(events[i].cursor) for i in (0, 7, 33, 60, 79)]
    topic_sets = [("d:a",), ("d:a", "d:b"), ("d:b", "d:c", "u:x"), ("d:nothing", "d:c"), tuple(TOPICS)]
    # Every pairing, twice over (identical requests share ranges), with two limits.
    requests = [
        (topics, cursor, limit) for topics, cursor in itertools.product(topic_sets, cursors) for limit in (100, 100, 60)
    ]
    # Unavailable cursors, among the rest: too far behind, beyond the head.
    head = await log.head()
    requests += [
        (("d:a", "d:b"), start, 3),
        (tuple(TOPICS), start, 50),
        (("d:a",), Cursor(log.epoch, Position(head.position.ms + 60_000, 0)), 100),
    ]

    async with asyncio.timeout(WAIT_S):
        alone = []
        for topics, cursor, limit in requests:
            try:
                alone.append(summary(await log.read_after(topics, cursor, limit)))
            except CursorUnavailable as error:
                alone.append(summary(error))
        before = await command_calls(own_redis)
        together = await asyncio.gather(
            *(log.read_after(topics, cursor, limit) for topics, cursor, limit in requests), return_exceptions=True
        )
        after = await command_calls(own_redis)

    assert [summary(outcome) for outcome in together] == alone
    # The expected outcomes are what they should be, not merely the same twice.
    assert alone[-3:] == [("unavailable", "too_far_behind")] * 2 + [("unavailable", "unknown_position")]
    assert sum(isinstance(a, list) and len(a) > 0 for a in alone) > len(requests) // 2
    assert alone[requests.index((("d:a", "d:b"), start, 100))] == [
        (e.cursor, e.topic, e.type, e.envelope) for e in events if e.topic in {"d:a", "d:b"}
    ]
    # Batched: far fewer head lookups than callers, and each distinct range read once per batch.
    batches = after.get("xinfo", 0) - before.get("xinfo", 0)
    ranges = after.get("xrange", 0) - before.get("xrange", 0)
    distinct_ranges = len({(t, c.position, limit) for topics, c, limit in requests for t in topics})
    assert 1 <= batches < len(requests) // 4
    assert ranges <= distinct_ranges * batches
    assert ranges < sum(len(topics) for topics, _, _ in requests)


async def test_a_failing_cursor_does_not_fail_the_others_in_its_batch(log: RedisEventLog) -> None:
    start = await log.head()
    events = await append_all(log, [("d:a", f"a{i}") for i in range(10)])
    head = await log.head()
    beyond = Cursor(log.epoch, Position(head.position.ms + 60_000, 0))
    calls = [
        log.read_after(["d:a"], start, 100),
        log.read_after(["d:a"], start, 3),
        log.read_after(["d:a"], beyond, 100),
        log.read_after(["d:a"], Cursor("otherepoch", head.position), 100),
        log.read_after(["d:a"], Cursor.parse(events[4].cursor), 100),
    ]
    async with asyncio.timeout(WAIT_S):
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    reasons = [o.reason if isinstance(o, CursorUnavailable) else None for o in outcomes]
    assert reasons == [None, "too_far_behind", "unknown_position", "unknown_epoch", None]
    assert [e.cursor for e in outcomes[0]] == [e.cursor for e in events]  # type: ignore[union-attr]
    assert [e.cursor for e in outcomes[4]] == [e.cursor for e in events[5:]]  # type: ignore[union-attr]
    # And the log goes on serving.
    assert [e.cursor for e in await log.read_after(["d:a"], Cursor.parse(events[8].cursor), 100)] == [events[9].cursor]
