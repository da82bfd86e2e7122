"""`GroupCommit`: callers that arrive together share one `run_batch` call, each gets its own
outcome, and a caller going away or a failing batch never harms the others.

The batch functions here are the tests' own (they count and record what they were given);
nothing of the real system is stood in for. Batches are held open with an `asyncio.Event`, so
which callers share a batch is decided by the test, not by timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from app.infra.batching import GroupCommit

WAIT_S = 5.0  # bound on every wait below; none is expected to come near it


class Recorder:
    """A batch function: doubles each number, after the gate opens; records every batch."""

    def __init__(self, *, gated: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()
        self.started = asyncio.Event()
        self.cancelled = 0

    async def __call__(self, items: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        self.started.set()
        try:
            async with asyncio.timeout(WAIT_S):
                await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        outcomes: list[int | BaseException] = []
        for item in items:
            outcomes.append(ValueError(f"odd {item}") if item % 2 else item * 2)
        return outcomes


async def settle() -> None:
    """Let every ready task run until it blocks (a bounded number of loop turns)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_concurrent_callers_share_batches_and_each_gets_its_own_outcome() -> None:
    recorder = Recorder()
    commit: GroupCommit[int, int] = GroupCommit(recorder)
    callers = 60
    async with asyncio.timeout(WAIT_S):
        outcomes = await asyncio.gather(*(commit.submit(i) for i in range(callers)), return_exceptions=True)
    # Fewer batch calls than callers, and every item handled exactly once.
    assert len(recorder.batches) < callers
    assert sorted(item for batch in recorder.batches for item in batch) == list(range(callers))
    for i, outcome in enumerate(outcomes):
        if i % 2:
            assert isinstance(outcome, ValueError) and str(outcome) == f"odd {i}"
        else:
            assert outcome == i * 2


async def test_callers_arriving_during_a_batch_form_the_next_one() -> None:
    recorder = Recorder(gated=True)
    commit: GroupCommit[int, int] = GroupCommit(recorder)
    async with asyncio.timeout(WAIT_S):
        first = asyncio.create_task(commit.submit(0))
        await recorder.started.wait()  # batch [0] is running, held at the gate
        later = [asyncio.create_task(commit.submit(i)) for i in (2, 4, 6, 8)]
        await settle()
        assert recorder.batches == [[0]]  # nothing runs beside a running batch
        recorder.gate.set()
        assert await first == 0
        assert await asyncio.gather(*later) == [4, 8, 12, 16]
    assert recorder.batches == [[0], [2, 4, 6, 8]]


async def test_max_batch_is_respected() -> None:
    recorder = Recorder(gated=True)
    commit: GroupCommit[int, int] = GroupCommit(recorder, max_batch=3)
    async with asyncio.timeout(WAIT_S):
        tasks = [asyncio.create_task(commit.submit(i * 2)) for i in range(11)]
        await recorder.started.wait()
        recorder.gate.set()
        results = await asyncio.gather(*tasks)
    assert results == [i * 4 for i in range(11)]
    assert all(1 <= len(batch) <= 3 for batch in recorder.batches), recorder.batches
    assert len(recorder.batches) >= 4  # 11 items, at most 3 a batch
    assert sorted(item for batch in recorder.batches for item in batch) == [i * 2 for i in range(11)]


async def test_a_failing_batch_fails_each_of_its_callers_and_the_next_batch_works() -> None:
    calls: list[list[str]] = []
    gate = asyncio.Event()

    async def run_batch(items: Sequence[str]) -> list[str | BaseException]:
        calls.append(list(items))
        if items == ["hold"]:
            async with asyncio.timeout(WAIT_S):
                await gate.wait()
        if "boom" in items:
            raise RuntimeError("the backend went away")
        return [item.upper() for item in items]

    commit: GroupCommit[str, str] = GroupCommit(run_batch)
    async with asyncio.timeout(WAIT_S):
        held = asyncio.create_task(commit.submit("hold"))
        await settle()
        doomed = [asyncio.create_task(commit.submit(item)) for item in ("a", "boom", "b")]
        await settle()
        gate.set()
        assert await held == "HOLD"
        outcomes = await asyncio.gather(*doomed, return_exceptions=True)
        assert [type(o) for o in outcomes] == [RuntimeError] * 3
        assert all(str(o) == "the backend went away" for o in outcomes)
        # The group commit goes on: the next callers are served.
        assert list(await asyncio.gather(commit.submit("c"), commit.submit("d"))) == ["C", "D"]
    assert calls[:2] == [["hold"], ["a", "boom", "b"]]


async def test_a_wrong_number_of_outcomes_fails_the_batch_not_the_group_commit() -> None:
    async def run_batch(items: Sequence[int]) -> list[int | BaseException]:
        return [] if 13 in items else list(items)

    commit: GroupCommit[int, int] = GroupCommit(run_batch)
    async with asyncio.timeout(WAIT_S):
        with pytest.raises(RuntimeError, match="got 0 outcomes"):
            await commit.submit(13)
        assert await commit.submit(7) == 7


async def test_a_cancelled_caller_does_not_cancel_the_batch_for_the_others() -> None:
    recorder = Recorder(gated=True)
    commit: GroupCommit[int, int] = GroupCommit(recorder)
    async with asyncio.timeout(WAIT_S):
        # The first caller starts the batch; it is the one that goes away.
        starter = asyncio.create_task(commit.submit(0))
        await recorder.started.wait()
        # Two more wait for the next batch; one of them goes away too.
        waiting = [asyncio.create_task(commit.submit(i)) for i in (2, 4)]
        await settle()
        starter.cancel()
        waiting[0].cancel()
        await settle()
        recorder.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await starter
        with pytest.raises(asyncio.CancelledError):
            await waiting[0]
        assert await waiting[1] == 8
    assert recorder.cancelled == 0
    assert recorder.batches == [[0], [2, 4]]


async def test_close_cancels_the_running_batch_and_the_waiting_callers() -> None:
    recorder = Recorder(gated=True)  # the gate is never opened: only close() can end the batch
    commit: GroupCommit[int, int] = GroupCommit(recorder)
    running = asyncio.create_task(commit.submit(0))
    await asyncio.wait_for(recorder.started.wait(), WAIT_S)
    waiting = [asyncio.create_task(commit.submit(i)) for i in (2, 4)]
    await settle()
    closing = asyncio.create_task(commit.close())
    try:
        # Not a timing check: without the cancel, close() would wait on a batch that never ends.
        done, _ = await asyncio.wait({closing}, timeout=WAIT_S / 2)
        assert closing in done
        await closing
    finally:
        recorder.gate.set()
    for task in (running, *waiting):
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, WAIT_S)
    assert recorder.cancelled == 1  # the running batch was stopped
    assert recorder.batches == [[0]]  # the waiting ones never ran


async def test_a_cancelled_close_is_not_swallowed() -> None:
    """close() waits for the stopped batch; if its own caller is cancelled meanwhile (a shutdown
    step under a timeout), that cancellation must reach the caller."""
    release = asyncio.Event()

    async def run_batch(items: Sequence[int]) -> list[int | BaseException]:
        try:
            await asyncio.wait_for(release.wait(), WAIT_S)
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.wait_for(release.wait(), WAIT_S))  # a slow cleanup
            raise
        return list(items)

    commit: GroupCommit[int, int] = GroupCommit(run_batch)
    caller = asyncio.create_task(commit.submit(1))
    await settle()
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await commit.close()
    finally:
        release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(caller, WAIT_S)
