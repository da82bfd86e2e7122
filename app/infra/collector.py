"""Garbage collection for a process holding thousands of long-lived connections.

CPython's full collection (generation 2) walks every object the collector tracks. With 10,000
open streams it stopped the event loop for 60-270 ms every few seconds in `bench.run seed`
and freed nothing (the streams are alive): those pauses were the whole p99 tail
(docs/PERFORMANCE.md, "Garbage collection pauses").

So what has lived through one `freeze_every_s` is treated as long-lived: `gc.freeze()` moves
it to the permanent generation (a list splice, O(1)), and the collector's passes walk only what
is younger. Cyclic garbage among frozen objects (a stream closed after it was frozen, if it
sits in a reference cycle) is found by the full pass every `full_every_s`: unfreeze, collect,
freeze again. One long pause per interval instead of one every few seconds, and memory held
by such cycles is bounded by what one interval leaves.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger("parley.collector")


class Collector:
    def __init__(self, *, freeze_every_s: float, full_every_s: float) -> None:
        self.freeze_every_s = freeze_every_s
        self.full_every_s = full_every_s
        self._last_full = time.monotonic()

    def step(self, now: float) -> None:
        """Freeze what lived through the last interval; the full pass when it is due."""
        if now - self._last_full >= self.full_every_s:
            self.full_pass()
            self._last_full = now
        else:
            gc.freeze()

    def full_pass(self) -> int:
        """Unfreeze, collect everything, freeze what survived. Returns the objects freed."""
        started = time.perf_counter()
        gc.unfreeze()
        freed = gc.collect()
        gc.freeze()
        log.debug("full collection: %d freed in %.1f ms", freed, (time.perf_counter() - started) * 1000)
        return freed

    async def run(self) -> None:
        """Until cancelled (the serving process owns this task and cancels it on shutdown)."""
        while True:
            await asyncio.sleep(self.freeze_every_s)
            self.step(time.monotonic())
