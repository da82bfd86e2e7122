"""Redis losing its data (restarted without persistence) or merely restarting (with AOF), and
stale pooled connections afterwards: against a private redis-server these tests kill."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.log.cursor import Cursor
from app.log.eventlog import Append, CursorUnavailable, LogGap
from app.log.eventlog_redis import RedisEventLog
from app.log.events import Event, envelope_body

from .support import OwnRedisEventLog, RedisServer, Server, bearer, redis_server, sign
from .test_stream import events, make_discussion, open_stream, post

TOPIC = "d:loss"


def body(text: str) -> bytes:
    return envelope_body("response_posted", discussion_id="loss", user=None, payload={"text": text})


@pytest.fixture
def volatile_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(persistence="none") as server:
        yield server


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(persistence="aof") as server:
        yield server


async def opened(url: str) -> RedisEventLog:
    log = OwnRedisEventLog(url, prefix="loss", retention_s=3600)
    await log.open()
    return log


async def restart(server: RedisServer) -> None:
    server.stop(signal.SIGKILL)
    await asyncio.to_thread(server.start)


@pytest.fixture
async def two_logs(volatile_redis: RedisServer) -> AsyncIterator[tuple[RedisEventLog, RedisEventLog]]:
    a, b = await opened(volatile_redis.url), await opened(volatile_redis.url)
    yield a, b
    await a.close()
    await b.close()


async def test_a_cursor_from_before_the_loss_is_sync_required_even_after_new_appends(
    volatile_redis: RedisServer, two_logs: tuple[RedisEventLog, RedisEventLog]
) -> None:
    a, b = two_logs
    first = await a.append(TOPIC, "response_posted", body("before"))
    await a.append(TOPIC, "response_posted", body("lost"))
    old_epoch = a.epoch
    await restart(volatile_redis)
    # The first append after the loss (on a pooled connection Redis has forgotten) goes
    # through, in a new epoch that both processes then use.
    after = await a.append(TOPIC, "response_posted", body("after"))
    assert a.epoch != old_epoch
    assert after.cursor.startswith(a.epoch + ".")
    with pytest.raises(CursorUnavailable) as caught:
        await b.read_after([TOPIC], Cursor.parse(first.cursor), limit=100)
    assert caught.value.reason == "unknown_epoch"  # never "just the events after the restart"
    # Cross-process resume in the new epoch works on the other process.
    later = await b.append(TOPIC, "response_posted", body("later"))
    resumed = await b.read_after([TOPIC], Cursor.parse(after.cursor), limit=100)
    assert [e.cursor for e in resumed] == [later.cursor]
    assert a.epoch == b.epoch


async def test_a_process_started_after_the_loss_adopts_the_survivors_epoch(
    volatile_redis: RedisServer, two_logs: tuple[RedisEventLog, RedisEventLog]
) -> None:
    a, _ = two_logs
    await a.append(TOPIC, "response_posted", body("before"))
    await restart(volatile_redis)
    after = await a.append(TOPIC, "response_posted", body("after"))
    late = await opened(volatile_redis.url)
    try:
        assert late.epoch == a.epoch
        assert await late.read_after([TOPIC], Cursor.parse(after.cursor), limit=10) == []
    finally:
        await late.close()


async def test_a_batch_appended_after_the_loss_is_all_in_the_new_epoch(
    volatile_redis: RedisServer, two_logs: tuple[RedisEventLog, RedisEventLog]
) -> None:
    a, b = two_logs
    first = await a.append(TOPIC, "response_posted", body("before"))
    old_epoch = a.epoch
    await restart(volatile_redis)
    batch = await a.append_many([Append(TOPIC, "response_posted", body(str(i))) for i in range(250)])
    assert a.epoch != old_epoch
    assert all(e.cursor.startswith(a.epoch + ".") for e in batch)
    with pytest.raises(CursorUnavailable) as caught:
        await b.read_after([TOPIC], Cursor.parse(first.cursor), limit=1000)
    assert caught.value.reason == "unknown_epoch"
    resumed = await b.read_after([TOPIC], Cursor.parse(batch[0].cursor), limit=1000)
    assert [e.cursor for e in resumed] == [e.cursor for e in batch[1:]]


async def test_head_after_the_loss_is_in_the_new_epoch(
    volatile_redis: RedisServer, two_logs: tuple[RedisEventLog, RedisEventLog]
) -> None:
    a, b = two_logs
    await a.append(TOPIC, "response_posted", body("before"))
    old_epoch = b.epoch
    await restart(volatile_redis)
    head = await b.head()  # nobody appended since: b mints the new epoch, a adopts it
    assert head.epoch != old_epoch
    event = await a.append(TOPIC, "response_posted", body("after"))
    assert event.cursor.startswith(head.epoch + ".")
    assert [e.cursor for e in await b.read_after([TOPIC], head, limit=10)] == [event.cursor]


async def test_the_tail_reports_a_gap_before_the_first_event_of_a_new_epoch(
    volatile_redis: RedisServer, two_logs: tuple[RedisEventLog, RedisEventLog]
) -> None:
    a, b = two_logs
    received: list[Event | LogGap] = []

    async def read() -> None:
        async for item in b.tail():
            received.append(item)

    task = asyncio.create_task(read())
    try:
        for _ in range(100):  # until the tail has started (it reads from where the log was)
            before = await a.append(TOPIC, "response_posted", body("before"))
            await asyncio.sleep(0.05)
            if received:
                break
        await wait_until(lambda: any(isinstance(i, Event) and i.cursor == before.cursor for i in received))
        mark = len(received)
        await restart(volatile_redis)
        await a.append(TOPIC, "response_posted", body("after"))
        await wait_until(lambda: any(isinstance(i, LogGap) for i in received[mark:]), why=received)
        later = await a.append(TOPIC, "response_posted", body("later"))
        await wait_until(lambda: any(isinstance(i, Event) and i.position == later.position for i in received))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    since = received[mark:]
    first_gap = next(n for n, i in enumerate(since) if isinstance(i, LogGap))
    # Nothing of the new epoch is handed on before the gap, and all after it is in the new one.
    assert all(isinstance(i, LogGap) for i in since[:first_gap])
    assert all(i.cursor.startswith(a.epoch + ".") for i in since[first_gap:] if isinstance(i, Event))


async def test_with_aof_a_restart_keeps_the_epoch_and_readers_resume_exactly(aof_redis: RedisServer) -> None:
    log = await opened(aof_redis.url)
    try:
        events = [await log.append(TOPIC, "response_posted", body(str(i))) for i in range(5)]
        epoch = log.epoch
        await restart(aof_redis)
        more = await log.append(TOPIC, "response_posted", body("after"))
        assert log.epoch == epoch
        resumed = await log.read_after([TOPIC], Cursor.parse(events[1].cursor), limit=100)
        assert [e.cursor for e in resumed] == [e.cursor for e in [*events[2:], more]]
    finally:
        await log.close()


async def test_pooled_connections_survive_a_redis_restart(volatile_redis: RedisServer) -> None:
    log = await opened(volatile_redis.url)
    try:
        # Fill the pool with connections, then restart Redis under them.
        await asyncio.gather(*(log.append(TOPIC, "response_posted", body(str(i))) for i in range(40)))
        await restart(volatile_redis)
        results = await asyncio.gather(
            *(log.append(TOPIC, "response_posted", body(str(i))) for i in range(80)), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        assert failures == []
    finally:
        await log.close()


async def test_an_outbox_key_appends_once(volatile_redis: RedisServer) -> None:
    log = await opened(volatile_redis.url)
    try:
        first = await log.append(TOPIC, "response_posted", body("x"), dedupe_key="outbox-1")
        again = await log.append(TOPIC, "response_posted", body("x"), dedupe_key="outbox-1")
        other = await log.append(TOPIC, "response_posted", body("y"), dedupe_key="outbox-2")
        assert again.position == first.position
        stored = await log.read_after([TOPIC], Cursor(log.epoch, first.position), limit=10)
        assert [e.position for e in stored] == [other.position]
    finally:
        await log.close()


async def wait_until(condition: object, timeout_s: float = 15.0, why: object = None) -> None:
    assert callable(condition)
    try:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"not within {timeout_s}s: {why!r}") from None


@pytest.mark.slow
async def test_servers_agree_after_the_loss_and_resuming_readers_are_told(
    volatile_redis: RedisServer, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """The issue's case, end to end: a reader offline while Redis restarts empty, a post lands
    right after (before any server's reader noticed), then the reader resumes on the other
    server: `sync_required`, not just what came after. A server started later agrees on the
    new epoch: a cursor of the new epoch resumes there without a needless `sync_required`."""
    env = {"REDIS_URL": volatile_redis.url, "PARLEY_REDIS_PREFIX": "loss"}
    a, b = start_server(tmp_path, **env), start_server(tmp_path, **env)
    alice = sign("alice")
    async with httpx.AsyncClient(timeout=10) as client:
        discussion = await make_discussion(client, a, alice)
        await post(client, a, alice, discussion, "seen")
        listed = await client.get(f"{a.url}/api/discussions/{discussion}/responses", headers=bearer(alice))
        offline_cursor = listed.json()["cursor"]
        await post(client, a, alice, discussion, "lost with Redis")
        volatile_redis.stop(signal.SIGKILL)
        await asyncio.sleep(4)  # long enough for the servers' readers to back off
        await asyncio.to_thread(volatile_redis.start)
        after = await post_until_stored(client, a, alice, discussion, "after the restart")
        async with open_stream(b, alice, [discussion], headers={"Last-Event-ID": offline_cursor}) as stream:
            [notice] = await events(stream, 1)
        assert notice.event == "sync_required", notice
        new_cursor = notice.id or ""
        c = start_server(tmp_path, **env)
        later = await post(client, b, alice, discussion, "later")
        async with open_stream(c, alice, [discussion], headers={"Last-Event-ID": new_cursor}) as stream:
            resumed = await events(stream, 1)
    assert resumed[0].event == "response_posted"
    assert resumed[0].json["payload"]["response"]["id"] in (after["id"], later["id"])


async def post_until_stored(
    client: httpx.AsyncClient, server: Server, token: str, discussion: str, text: str
) -> dict[str, Any]:
    """Post with a client_id, retrying (as a client does) while Redis is coming back."""
    body = {"body": text, "client_id": f"retry-{text}"}
    url = f"{server.url}/api/discussions/{discussion}/responses"
    for _ in range(100):
        r = await client.post(url, json=body, headers=bearer(token))
        if r.status_code in (200, 201):
            return dict(r.json())
        await asyncio.sleep(0.1)
    raise AssertionError(f"not stored: {r.status_code} {r.text}")
