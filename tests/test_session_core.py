"""The session core without a web stack: a `Node` on the embedded log and presence store, a real
`Hub` reading the log and a real `PresenceTracker`, and sessions driven the way transports drive
them (`next()` for a task per connection, `stream_to` + `tick()` + `due()` for the lean path's
process-wide timer). No Quart, no database, no server process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from app.auth import Identity
from app.core.node import Node, StreamSettings
from app.core.session import HEARTBEAT, TICKS_PER_HEARTBEAT, Deliver, End, Step, StreamSession
from app.infra.metrics import Metrics
from app.log import topics
from app.log.eventlog_memory import MemoryEventLog
from app.log.events import Event
from app.presence.store import PresenceTimings
from app.presence.store_memory import MemoryPresenceStore

HEARTBEAT_S = 0.2


@dataclass
class Running:
    node: Node
    log: MemoryEventLog


async def start(settings: StreamSettings, timings: PresenceTimings | None = None) -> AsyncIterator[Running]:
    log = MemoryEventLog(retention_s=3600)
    node = Node(log, MemoryPresenceStore(timings or PresenceTimings()), Metrics(), settings)
    tasks = [asyncio.create_task(node.hub.run()), asyncio.create_task(node.presence.run())]
    try:
        yield Running(node, log)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await log.close()


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    async for value in start(StreamSettings(heartbeat_s=HEARTBEAT_S, max_buffered_events=5)):
        yield value


def who(user_id: str, *, expires_in_s: float = 3600) -> Identity:
    return Identity(user_id, user_id.title(), frozenset(), time.time() + expires_in_s)


async def post(node: Node, discussion_id: str, text: str) -> Event:
    return await node.publish(
        topics.discussion(discussion_id), "response_posted", discussion_id=discussion_id, user=None, payload={"t": text}
    )


async def step_of(session: StreamSession, timeout_s: float = 5.0) -> Step:
    async with asyncio.timeout(timeout_s):
        return await session.next()


async def events_until(session: StreamSession, count: int) -> list[Event]:
    """Live events (presence events skipped) until `count` arrived; heartbeats go by."""
    found: list[Event] = []
    async with asyncio.timeout(5):
        while len(found) < count:
            step = await session.next()
            assert not isinstance(step, End), step
            if isinstance(step, Deliver):
                found += [event for event in step.events if event.type == "response_posted"]
    return found


async def test_resume_then_live_events_each_once(running: Running) -> None:
    node = running.node
    first = await post(node, "d1", "one")
    await post(node, "d1", "two")
    await post(node, "d2", "elsewhere")
    session = node.open_session(who("alice"), ["d1"])
    try:
        missed = await session.open(first.cursor)
        assert [event.as_dict()["payload"]["t"] for event in missed if event.type == "response_posted"] == ["two"]
        await post(node, "d1", "three")
        live = await events_until(session, 1)
        assert [event.as_dict()["payload"]["t"] for event in live] == ["three"]
    finally:
        session.close()
    assert node.hub.subscription_count == 0 and node.stream_slots.open_count("alice") == 0


async def test_a_checked_session_asks_again_once_subscribed(running: Running) -> None:
    """A removal this process handled between the transport's check and the subscription (its
    `access_revoked` reached the hub before the subscription existed) is seen at open."""
    asked: list[str] = []

    async def recheck(identity: Identity, discussion_id: str) -> bool:
        asked.append(discussion_id)
        return discussion_id != "gone"  # read access removed meanwhile

    running.node.recheck_access = recheck
    unchecked = running.node.open_session(who("bob"), ["d1", "gone"])
    session = running.node.open_session(who("alice"), ["d1", "gone"], access_checked=True)
    try:
        await unchecked.open(None)
        assert asked == [] and unchecked.discussion_ids == ["d1", "gone"]
        await session.open(None)
        assert asked == ["d1", "gone"] and session.discussion_ids == ["d1"]
        await post(running.node, "gone", "not for alice any more")
        kept = await post(running.node, "d1", "still hers")
        assert [event.position for event in await events_until(session, 1)] == [kept.position]
    finally:
        session.close()
        unchecked.close()


async def test_garbage_cursor_gives_sync_required(running: Running) -> None:
    session = running.node.open_session(who("alice"), ["d1"])
    try:
        missed = await session.open("not-a-cursor")
        assert missed[0].type == "sync_required" and missed[0].as_dict()["payload"] == {"reason": "invalid_cursor"}
    finally:
        session.close()


async def test_heartbeat_is_due_after_a_quiet_interval(running: Running) -> None:
    session = running.node.open_session(who("alice"), ["d1"])
    try:
        await session.open(None)
        clock = asyncio.get_running_loop().time
        began = clock()
        while True:  # presence events of the session's own join may come first
            step = await step_of(session)
            if step is HEARTBEAT:
                break
            began = clock()
        assert clock() - began >= HEARTBEAT_S * 0.9
        # An event restarts the interval; a reply the transport wrote does too.
        await post(running.node, "d1", "x")
        assert len(await events_until(session, 1)) == 1
        session.wrote()
        assert await step_of(session) is HEARTBEAT
    finally:
        session.close()


async def test_token_expiry_ends_the_session_with_auth_expired(running: Running) -> None:
    session = running.node.open_session(who("alice", expires_in_s=0.5), ["d1"])
    try:
        await session.open(None)
        async with asyncio.timeout(5):
            while not isinstance(step := await session.next(), End):
                pass
        assert step.reason == "auth_expired" and step.notice is not None
        assert step.notice.type == "auth_expired" and not step.notice_moves_cursor
        assert step.notice.as_dict()["payload"] == {"reason": "token_expired"}
        # The notice is handed out once; the end stays.
        again = session.due()
        assert again is not None and again.reason == "auth_expired" and again.notice is None
    finally:
        session.close()


async def test_a_slow_consumer_is_dropped_and_told_to_resume(running: Running) -> None:
    session = running.node.open_session(who("alice"), ["d1"])
    try:
        await session.open(None)
        for n in range(10):  # max_buffered_events=5, nobody reading
            await post(running.node, "d1", str(n))
        async with asyncio.timeout(5):
            while session.due() is None:
                await asyncio.sleep(0.01)
        step = await step_of(session)
        assert isinstance(step, End) and step.reason == "dropped" and step.notice is None
    finally:
        session.close()


async def test_a_stopping_hub_ends_sessions_as_stopping(running: Running) -> None:
    session = running.node.open_session(who("alice"), ["d1"])
    try:
        await session.open(None)
        waiting = asyncio.create_task(session.next())
        await asyncio.sleep(0.01)
        running.node.hub.stop()
        step = await asyncio.wait_for(waiting, 5)
        assert isinstance(step, End) and step.reason == "stopping"
    finally:
        session.close()


async def test_an_idle_session_is_told_once_and_ends() -> None:
    timings = PresenceTimings(ttl_ms=300, idle_ms=400)
    async for running in start(StreamSettings(heartbeat_s=HEARTBEAT_S), timings):
        session = running.node.open_session(who("alice"), ["d1"])
        try:
            await session.open(None)
            async with asyncio.timeout(5):
                while not isinstance(step := await session.next(), End):
                    pass
            assert step.reason == "idle" and step.notice is not None and step.notice_moves_cursor
            assert step.notice.type == "session_idle" and step.notice.as_dict()["payload"] == {"reason": "idle"}
        finally:
            session.close()


async def test_the_tracker_tells_sessions_their_status(running: Running) -> None:
    node = running.node
    tab, other_tab = node.open_session(who("alice"), ["d1"]), node.open_session(who("alice"), ["d1"])
    try:
        await tab.open(None)
        await other_tab.open(None)
        await tab.set_status("away")
        assert (tab.status, other_tab.status) == ("away", "online")
        await node.presence.set_user_status(who("alice"), "away")  # PUT /api/presence: every connection
        assert other_tab.status == "away"
    finally:
        tab.close()
        other_tab.close()


async def test_the_lean_path_sink_and_ticks(running: Running) -> None:
    """What `lean_sse` does: a sink instead of a task, and one timer calling `tick()`."""
    node = running.node
    session = node.open_session(who("alice"), ["d1"])
    written: list[Event] = []
    try:
        await session.open(None)
        await post(node, "d1", "buffered before the sink")
        await asyncio.sleep(0.05)  # the hub hands it to the subscription's buffer
        pending = session.stream_to(lambda event: written.append(event) is None, lambda: None)
        assert pending is not None and "buffered before the sink" in [e.as_dict()["payload"].get("t") for e in pending]
        ticks = [session.tick() for _ in range(TICKS_PER_HEARTBEAT)]
        assert ticks[:-1] == [None] * (TICKS_PER_HEARTBEAT - 1) and ticks[-1] is HEARTBEAT
        await post(node, "d1", "live")
        async with asyncio.timeout(5):
            while not any(event.type == "response_posted" for event in written):
                await asyncio.sleep(0.01)
        # A write during the last tick counts: the heartbeat comes TICKS_PER_HEARTBEAT ticks later.
        assert [session.tick() for _ in range(TICKS_PER_HEARTBEAT)] == [None] * (TICKS_PER_HEARTBEAT - 1) + [HEARTBEAT]
        session.fell_behind()  # the transport's write buffer is over its cap
        end = session.tick()
        assert isinstance(end, End) and end.reason == "dropped"
    finally:
        session.close()


def test_the_session_core_does_not_load_the_web_stack() -> None:
    probe = "import sys, app.core.node; print('quart' in sys.modules, 'sqlalchemy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
