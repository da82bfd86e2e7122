"""Background loops must stop when cancelled, even when the cancellation arrives just as the
thing they wait for completes (a shutdown closes streams, which wakes the presence loop, while
cancelling it). On Python 3.11 `asyncio.wait_for` swallows such a cancellation; a server then
never finished stopping (bench/: herd, 1 run in 5)."""

from __future__ import annotations

import asyncio

import pytest

from app.core.hub import Hub
from app.core.presence_tracker import PresenceTracker
from app.infra.metrics import Metrics
from app.log.eventlog_memory import MemoryEventLog
from app.presence.store import PresenceTimings
from app.presence.store_memory import MemoryPresenceStore


async def test_the_presence_loop_stops_when_woken_and_cancelled_together() -> None:
    hub = Hub(MemoryEventLog(retention_s=3600), Metrics())
    tracker = PresenceTracker(MemoryPresenceStore(PresenceTimings()), hub, sweep_interval_s=30.0)
    for _ in range(20):  # the race is exact: every round must stop
        task = asyncio.create_task(tracker.run())
        await asyncio.sleep(0.01)  # now waiting for its next wake-up
        tracker.nudge()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2.0)


async def test_a_subscription_wait_stops_when_fed_and_cancelled_together() -> None:
    hub = Hub(MemoryEventLog(retention_s=3600), Metrics())
    subscription = hub.subscribe(["t"], 10)
    for _ in range(20):
        task = asyncio.create_task(subscription.next_events(30.0))
        await asyncio.sleep(0.01)
        subscription._wake()  # what a pushed event does
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2.0)


async def test_a_loop_stops_even_if_a_call_inside_swallowed_its_cancellation() -> None:
    from app.cancellation import raise_if_cancelling

    async def swallowing_call() -> None:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            return  # what a misbehaving library call does with our cancellation

    async def loop() -> None:
        for _ in range(1_000):  # bounded; without the check it would run to the end
            raise_if_cancelling()
            await swallowing_call()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2.0)
