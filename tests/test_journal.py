"""`EventLog.read_journal` (what the notification worker resumes from), on both backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from app.log.cursor import Cursor
from app.log.eventlog import CursorUnavailable, EventLog
from app.log.eventlog_memory import MemoryEventLog

from .support import OwnRedisEventLog


@pytest.fixture(params=["memory", "redis"])
async def log(request: pytest.FixtureRequest) -> AsyncIterator[EventLog]:
    event_log: EventLog
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        event_log = OwnRedisEventLog(url, prefix=request.getfixturevalue("redis_prefix"), retention_s=3600)
    else:
        event_log = MemoryEventLog(retention_s=3600)
    await event_log.open()
    try:
        yield event_log
    finally:
        await event_log.close()


async def test_durable_events_of_all_topics_in_order_after_the_cursor(log: EventLog) -> None:
    start = await log.head()
    first = await log.append("d:1", "response_posted", b'{"type":"response_posted"}')
    await log.append("d:1", "typing_started", b'{"type":"typing_started"}', durable=False)
    second = await log.append("u:bob", "notification", b'{"type":"notification"}')
    third = await log.append("d:2", "response_posted", b'{"type":"response_posted"}')
    got = await log.read_journal(start, 10, 0.1)
    assert [(e.topic, e.cursor) for e in got] == [(e.topic, e.cursor) for e in (first, second, third)]
    assert [e.cursor for e in await log.read_journal(Cursor.parse(first.cursor), 1, 0.1)] == [second.cursor]
    assert await log.read_journal(Cursor.parse(third.cursor), 10, 0.05) == []


async def test_a_waiting_read_wakes_for_the_next_event(log: EventLog) -> None:
    start = await log.head()
    reading = asyncio.create_task(log.read_journal(start, 10, 5.0))
    await asyncio.sleep(0.05)
    appended = await log.append("d:1", "response_posted", b'{"type":"response_posted"}')
    assert [e.cursor for e in await reading] == [appended.cursor]


async def test_unusable_cursors_raise(log: EventLog) -> None:
    with pytest.raises(CursorUnavailable):
        await log.read_journal(Cursor("otherepoch", (await log.head()).position), 10, 0.05)


async def test_a_cursor_before_what_was_trimmed_raises() -> None:
    log = MemoryEventLog(retention_s=3600, max_journal=2)
    start = await log.head()
    for _ in range(3):
        await log.append("d:1", "response_posted", b'{"type":"response_posted"}')
    with pytest.raises(CursorUnavailable):
        await log.read_journal(start, 10, 0.05)
