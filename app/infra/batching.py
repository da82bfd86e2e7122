"""Group commit for calls that arrive together: one backend round trip for many callers.

A reconnect storm after a restart sends thousands of stream connects at once, and each needs
the same kinds of Redis work (its catch-up read, its presence registration). Done one by one,
each connect pays its own round trip and command overhead; `GroupCommit` lets every caller
await its own result while the work of all callers that arrived meanwhile runs as one batch.
At most one batch runs at a time: callers that arrive while it runs form the next one. So a
lone caller waits for nobody (its batch starts at once), and under load the batch grows with
the load, as in a database's group commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark an outcome as seen even if its caller went away, so asyncio does not warn."""
    if not future.cancelled():
        future.exception()


class GroupCommit(Generic[Item, Result]):
    """`await submit(item)` returns what `run_batch` produced for that item.

    `run_batch(items)` must return one outcome per item, in order (its result, or the exception
    to raise to that item's caller); an exception it raises
    fails every item of that batch. Batches hold at most `max_batch` items; the queue of
    waiting items is bounded by `max_pending` (past it, `submit` waits for room).
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[Item]], Awaitable[Sequence[Result | BaseException]]],
        *,
        max_batch: int = 500,
        max_pending: int = 20_000,
    ) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._room = asyncio.Semaphore(max_pending)
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        async with self._room:
            future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
            future.add_done_callback(_retrieve)
            self._pending.append((item, future))
            if self._worker is None:
                self._worker = asyncio.get_running_loop().create_task(self._drain())
            # The caller may be cancelled (its client went away); the batch goes on without it.
            return await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._run(batch)
        finally:
            self._worker = None

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            outcomes: Sequence[Result | BaseException] = await self._run_batch([item for item, _ in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"batch of {len(batch)} got {len(outcomes)} outcomes")
        except Exception as error:  # handed to every caller of the batch
            outcomes = [error] * len(batch)
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def close(self) -> None:
        """Shutdown: stop the running batch; its callers and any waiting ones are cancelled."""
        worker = self._worker
        try:
            if worker is not None:
                worker.cancel()
                try:
                    await worker
                except asyncio.CancelledError:
                    # The worker's own cancellation is expected; our caller's is not ours to swallow.
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise
        finally:
            for _, future in self._pending:
                future.cancel()
            self._pending.clear()
