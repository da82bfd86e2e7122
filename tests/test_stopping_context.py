"""The lean front's Hypercorn worker context: a stop wakes the sleeps between a WebSocket's
pings, so the ping loop of a WebSocket that already closed does not hold the stop up."""

from __future__ import annotations

import asyncio

from app.transports.lean_http import StoppingContext


async def test_a_stop_wakes_a_sleep_and_later_sleeps_are_whole() -> None:
    context = StoppingContext(None)
    sleeping = asyncio.create_task(context.sleep(60))
    await asyncio.sleep(0)
    assert not sleeping.done()
    await context.terminated.set()
    await asyncio.wait_for(sleeping, 5)  # woken, long before its 60 s
    # After the stop a sleep is a sleep again: an open WebSocket's loop does not spin on pings.
    after = asyncio.create_task(context.sleep(60))
    await asyncio.sleep(0.05)
    assert not after.done()
    after.cancel()
    await asyncio.gather(after, return_exceptions=True)
