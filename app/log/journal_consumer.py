"""The one reader per cluster that works through the log's journal in batches from a
checkpoint (the notification and analysis workers each run one).

- *One holder per cluster*: every process runs the loop; only the holder of a lease
  (`app.infra.lease`: a Redis key with an expiry; in-process when embedded) reads, and renews
  it while a batch runs (a handler sees `lost` set if it lapsed, and stops). Chosen over Redis
  consumer groups: one code path for both backends (the embedded log has none), and the
  journal is read in global order.
- *Checkpointed after the batch, by the holder only* (`Lease.save` checks both at once). A
  holder killed mid-batch saves nothing; the next one reads the batch again, so handlers are
  idempotent. `JournalHandler.checkpoint` may hold it back (the analysis: before scheduled work).
- *A failing batch is retried, then one event at a time*; an event that keeps failing
  (`MAX_ATTEMPTS`) is logged and skipped rather than blocking every later one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from app.cancellation import raise_if_cancelling, stop_if_cancelled
from app.infra.lease import Lease
from app.log.cursor import Cursor, InvalidCursor, Position
from app.log.eventlog import CursorUnavailable, EventLog
from app.log.events import Event, now_ms

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 5.0
MAX_ATTEMPTS = 5
# While the handler is not ready for more (`JournalHandler.ready`), look again after this.
BUSY_RETRY_S = 0.25


class JournalHandler:
    """What a consumer does with the journal; override what applies."""

    async def handle(self, start: Cursor, events: list[Event], lost: asyncio.Event) -> bool:
        """One batch, read after `start`. False if `lost` was set first: not checkpointed."""
        raise NotImplementedError

    async def acquired(self) -> None:
        """This process has just become the holder."""

    async def released(self) -> None:
        """This process has lost the lease (another one goes on from the checkpoint)."""

    async def idle(self) -> None:
        """A read found nothing new (the holder has caught up)."""

    def ready(self) -> bool:
        """False to pause reading (e.g. too much work queued)."""
        return True

    def checkpoint(self, read_to: Cursor) -> Cursor:
        """Where a successor should start, having read up to `read_to`."""
        return read_to


class JournalConsumer:
    def __init__(
        self,
        name: str,
        event_log: EventLog,
        lease: Lease,
        handler: JournalHandler,
        *,
        lease_s: float,
        batch_limit: int,
        read_wait_s: float = 1.0,
        linger_s: float = 0.0,
        on_lag: Callable[[float], None] | None = None,
    ) -> None:
        self._name = name
        self._log = event_log
        self._lease = lease
        self._handler = handler
        self._lease_s = lease_s
        self._batch_limit = batch_limit
        self._read_wait_s = read_wait_s
        # After a batch that was not full, wait this long before reading the next: a batch has
        # fixed costs (queries, a save), so one batch per `linger_s` beats one per event.
        self._linger_s = linger_s
        self._on_lag = on_lag or (lambda _s: None)
        self._holding = False
        self._read_to: Cursor | None = None  # where the holder has handled the journal to
        self._saved: str | None = None
        self._failures: dict[str, int] = {}  # failed attempts per batch start
        self._careful_until: Position | None = None  # one event at a time up to here

    async def initialise(self) -> None:
        """At start-up, before serving: a cluster's first checkpoint is the head of the log,
        so events posted once the server answers are never missed."""
        await self._lease.initialise(str(await self._log.head()))

    async def run(self) -> None:
        """Owned by the app; cancelled on shutdown (the lease is then released at once)."""
        backoff_s = 0.1
        try:
            while True:
                raise_if_cancelling()
                try:
                    if not await self._lease.hold():
                        await self._lose()
                        await asyncio.sleep(self._lease_s / 3)
                        continue
                    if not self._holding:
                        self._holding = True
                        log.info("%s: this process holds the lease", self._name)
                        await self._handler.acquired()
                    if not self._handler.ready():
                        await asyncio.sleep(BUSY_RETRY_S)
                        await self._save(self._handler.checkpoint(await self._position()))
                        continue
                    handled = await self._step(await self._position())
                    backoff_s = 0.1
                    if 0 < handled < self._batch_limit and self._linger_s:
                        await asyncio.sleep(self._linger_s)
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    stop_if_cancelled(error)
                    log.exception("%s: a step failed; retrying from the checkpoint in %.1fs", self._name, backoff_s)
                    self._read_to = None
                    await asyncio.sleep(backoff_s)
                    backoff_s = min(backoff_s * 2, MAX_BACKOFF_S)
        finally:
            try:
                if self._holding:
                    await self._lease.release()
            except Exception:  # Redis gone at shutdown: the lease simply expires
                log.warning("%s: could not release the lease", self._name)
            finally:
                await self._lease.close()

    async def _lose(self) -> None:
        if self._holding:
            log.warning("%s: lease lost; the new holder goes on from the checkpoint", self._name)
            self._holding, self._read_to, self._saved = False, None, None
            await self._handler.released()

    async def _position(self) -> Cursor:
        if self._read_to is None:
            text = await self._lease.checkpoint()
            try:
                self._read_to = None if text is None else Cursor.parse(text)
            except InvalidCursor:
                log.warning("%s: unreadable checkpoint %r; starting from the head", self._name, text)
            if self._read_to is None:
                self._read_to = await self._log.head()
                await self._save(self._read_to)
            else:
                self._saved = text
        return self._read_to

    async def _save(self, cursor: Cursor) -> None:
        text = str(cursor)
        if text == self._saved:
            return
        if await self._lease.save(text):
            self._saved = text
        else:
            log.warning("%s: lease lost before saving the checkpoint; the new holder redoes it", self._name)
            await self._lose()

    async def _step(self, start: Cursor) -> int:
        """One batch after `start`; returns how many events it held."""
        careful = self._careful_until is not None and start.position < self._careful_until
        try:
            events = await self._log.read_journal(start, 1 if careful else self._batch_limit, self._read_wait_s)
        except CursorUnavailable as unavailable:
            # Older than the retention window, or another epoch (embedded restart, flushed
            # Redis): what was there is gone; go on from the present and say so.
            log.warning("%s: checkpoint %s unusable (%s); skipping to the head", self._name, start, unavailable)
            self._read_to = await self._log.head()
            await self._save(self._read_to)
            return 0
        if not events:
            self._on_lag(0.0)  # caught up
            await self._handler.idle()
            await self._save(self._handler.checkpoint(start))
            return 0
        lost = asyncio.Event()
        keeper = asyncio.create_task(self._keep_lease(lost), name=f"{self._name}-lease")
        try:
            done = await self._handle(start, events, lost)
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        if not done:
            await self._lose()
            return len(events)
        self._read_to = Cursor(start.epoch, events[-1].position)
        self._on_lag(max(0, now_ms() - events[-1].position.ms) / 1000)
        await self._save(self._handler.checkpoint(self._read_to))
        return len(events)

    async def _handle(self, start: Cursor, events: list[Event], lost: asyncio.Event) -> bool:
        key = str(start)
        try:
            done = await self._handler.handle(start, events, lost)
        except Exception as error:
            stop_if_cancelled(error)
            attempts = self._failures[key] = self._failures.get(key, 0) + 1
            if len(events) > 1:
                self._careful_until = events[-1].position  # find the event that fails
            elif attempts >= MAX_ATTEMPTS:
                log.exception("%s: giving up on event %s", self._name, events[0].cursor)
                del self._failures[key]
                return True
            raise
        self._failures.pop(key, None)
        return done

    async def _keep_lease(self, lost: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 3)
            try:
                held = await self._lease.hold()
            except Exception as error:  # unknown (Redis away): keep going, the save will tell
                stop_if_cancelled(error)
                log.warning("%s: lease renewal failed: %s", self._name, error)
                continue
            if not held:
                lost.set()
                return
