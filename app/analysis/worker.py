"""The analysis worker: recomputes a discussion's common ground after stances change, off the
request path, and publishes it (`analysis_refreshing`, then `analysis_updated`).

Design, and why:
- *Fed by the event log.* A response carrying stances appends `response_posted`, a new
  proposition `proposition_added`; this worker reads the log's journal after its checkpoint
  (as the notification worker does), so a post on any server is seen, once, by one reader.
- *One reader per cluster* (`app.log.journal_consumer`): every process runs this task; only the
  holder of the `analysis` lease (in-process when embedded) reads the journal and schedules runs. The
  checkpoint it saves never passes a change no finished run has covered (`DebounceSchedule.
  floor`), so a holder that dies loses nothing: its successor re-reads from there.
- *Debounced per discussion, single-flight* (`app.analysis.debounce`): a burst of stances costs about
  one run per `cg_min_interval_ms` plus one final run that sees the last of them, and a
  discussion is never computed twice at once by this process.
- *Never two at once across servers*: each run also holds a per-discussion lease
  (`RedisKeyedLease`, key `lease:analysis-run:<id>`) that expires after `cg_lease_s`. A former
  holder still finishing a run (it stalled, lost the reader lease, and a new holder took over)
  keeps its key, and the new holder waits for it. A run is cancelled once `RUN_BUDGET` of
  `cg_lease_s` has passed (a run that stalled past its lease, by SIGSTOP or a long pause, is
  cancelled at its next await when it wakes), and it checks that its key is still its own
  just before storing (`still_held`, which never takes a free key): it publishes nothing
  after losing its key. The version compare-and-set keeps the stored data right regardless.
- *From scratch*: each run counts the discussion's stances in one GROUP BY and builds the
  whole document (`app.analysis.rules`); the result cannot drift from the data.
- *Stored, then published*: `app.analysis.store.save` gives it the next version; the document
  is `analysis_updated`'s payload, and the notification worker turns its `new_common_ground`
  into `common_ground` notifications for followers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from app.analysis import store as analysis_store
from app.analysis.debounce import DebounceSchedule
from app.analysis.rules import Thresholds, document
from app.cancellation import raise_if_cancelling, stop_if_cancelled
from app.core.backends import Backends
from app.core.services import Services
from app.infra.lease import KeyedLease, Lease
from app.log import topics
from app.log.cursor import Cursor
from app.log.events import Event
from app.log.journal_consumer import JournalConsumer, JournalHandler

log = logging.getLogger(__name__)

LEASE_NAME = "analysis"
RUN_LEASE_NAME = "analysis-run"
BATCH_LIMIT = 500
READ_WAIT_S = 1.0
# After a batch that was not full, wait this long before reading the next: under a steady stream
# each read would otherwise return a handful of events and pay the step's fixed Redis round
# trips (lease, epoch, stream info, checkpoint) for them (in `bench.run seed`, 1,000 events/s,
# this worker's steps cost more of the event loop than its analyses). Runs are debounced by
# `cg_min_interval_ms` anyway; an event arriving after a quiet spell is read at once.
BATCH_LINGER_S = 0.1
# Discussions computed at once by the holder.
CONCURRENCY = 4
# The holder stops reading the journal while this many discussions wait for a run (each
# entry is small; this bounds the schedule when the database cannot keep up).
MAX_PENDING = 10_000
# A run must finish within this share of the run lease, so the lease never lapses under it.
RUN_BUDGET = 0.8
# A run whose discussion's key another process holds is tried again after this.
BUSY_RETRY_S = 0.25
_DISCUSSION_PREFIX = topics.discussion("")
# A response without stances is encoded with `"stances":{}` (response_json): skip it unparsed.
# (Inside a body the quotes would be escaped, so the text cannot occur there.)
_NO_STANCES = b'"stances":{}'


def discussion_to_analyse(event: Event) -> str | None:
    """The discussion whose analysis this journal event may change, if any."""
    if not event.topic.startswith(_DISCUSSION_PREFIX):
        return None
    discussion_id = event.topic[len(_DISCUSSION_PREFIX) :]
    if event.type == "proposition_added":
        return discussion_id
    if event.type != "response_posted" or _NO_STANCES in event.envelope:
        return None
    stances = (event.as_dict().get("payload") or {}).get("response", {}).get("stances")
    return discussion_id if stances else None


class AnalysisWorker(JournalHandler):
    def __init__(
        self,
        parley: Services,
        lease: Lease,
        run_lease: KeyedLease,
        *,
        thresholds: Thresholds,
        debounce_s: float,
        min_interval_s: float,
        lease_s: float,
        compute_delay_s: float = 0.0,
    ) -> None:
        self._parley = parley
        self._run_lease = run_lease
        self._thresholds = thresholds
        self._lease_s = lease_s
        self._compute_delay_s = compute_delay_s
        self._schedule = DebounceSchedule(debounce_s=debounce_s, min_interval_s=min_interval_s, retry_s=BUSY_RETRY_S)
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._consumer = JournalConsumer(
            "analysis worker",
            parley.log,
            lease,
            self,
            lease_s=lease_s,
            batch_limit=BATCH_LIMIT,
            read_wait_s=READ_WAIT_S,
            linger_s=BATCH_LINGER_S,
        )

    async def start_cursor(self) -> None:
        """Before serving: a cluster's first checkpoint is the head of the log."""
        await self._consumer.initialise()

    async def run(self) -> None:
        """Owned by the app; cancelled on shutdown (the consumer then releases the lease)."""
        try:
            async with asyncio.TaskGroup() as runs:
                runs.create_task(self._consumer.run(), name="analysis-reader")
                await self._dispatch_loop(runs)
        finally:
            await self._run_lease.close()

    # -- reading the journal (the consumer calls these, on the lease holder) -------------

    async def handle(self, start: Cursor, events: list[Event], lost: asyncio.Event) -> bool:
        """Schedule a run for each discussion whose analysis may have changed."""
        before = start.position
        now = time.monotonic()
        for event in events:
            discussion_id = discussion_to_analyse(event)
            if discussion_id is not None:
                self._schedule.mark(discussion_id, before, now)
            before = event.position
        self._wake.set()
        return True

    async def released(self) -> None:
        self._schedule.clear()  # the new holder re-reads from the checkpoint

    def ready(self) -> bool:
        return len(self._schedule) < MAX_PENDING  # else let the runs catch up before reading more

    def checkpoint(self, read_to: Cursor) -> Cursor:
        """Never past a change no finished run has covered (`DebounceSchedule.floor`)."""
        floor = self._schedule.floor()
        return read_to if floor is None else Cursor(read_to.epoch, min(floor, read_to.position))

    # -- running recomputations ---------------------------------------------------------

    async def _dispatch_loop(self, runs: asyncio.TaskGroup) -> None:
        while True:
            raise_if_cancelling()
            now = time.monotonic()
            self._schedule.prune(now)
            await self._slots.acquire()
            discussion_id = self._schedule.take_due(now)
            if discussion_id is not None:
                runs.create_task(self._run(discussion_id), name=f"analysis-run-{discussion_id}")
                continue
            self._slots.release()
            due = self._schedule.next_due()
            self._wake.clear()
            timeout = READ_WAIT_S if due is None else max(0.0, due - now)
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _run(self, discussion_id: str) -> None:
        ok = False
        try:
            if await self._run_lease.acquire(discussion_id):
                try:
                    async with asyncio.timeout(self._lease_s * RUN_BUDGET):
                        ok = await self._recompute(discussion_id)
                finally:
                    await self._run_lease.release(discussion_id)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            stop_if_cancelled(error)
            log.exception("analysis worker: recomputing %s failed; it will be retried", discussion_id)
        finally:
            self._schedule.finished(discussion_id, time.monotonic(), ok=ok)
            self._slots.release()
            self._wake.set()

    async def _recompute(self, discussion_id: str) -> bool:
        """One run: announce, count from scratch, store the next version, publish it."""
        parley = self._parley
        started = time.perf_counter()
        replacing = await analysis_store.current_version(parley.db, discussion_id)
        topic = topics.discussion(discussion_id)
        await parley.publish(
            topic, "analysis_refreshing", discussion_id=discussion_id, user=None, payload={"version": replacing}
        )
        if self._compute_delay_s:
            await asyncio.sleep(self._compute_delay_s)

        async def build(session: AsyncSession, previous: dict[str, Any] | None) -> dict[str, Any]:
            participants, counts = await analysis_store.tally(session, discussion_id)
            return document(
                version=0,  # `save` sets version and computed_at
                computed_at=None,
                source="computed",
                participants=participants,
                propositions=await analysis_store.propositions_of(session, discussion_id),
                counts=counts,
                thresholds=self._thresholds,
                previous_common_ground=(previous or {}).get("common_ground", []),
            )

        # Still ours? (A run that stalled past its lease must not publish beside its successor.)
        if not await self._run_lease.still_held(discussion_id):
            log.warning("analysis worker: lost the run lease of %s; not publishing", discussion_id)
            return False
        stored = await analysis_store.save(parley.db, discussion_id, "computed", build)
        await parley.publish(topic, "analysis_updated", discussion_id=discussion_id, user=None, payload=stored)
        parley.metrics.analysis_runs.inc()
        parley.metrics.analysis_seconds.observe(time.perf_counter() - started)
        return True


async def start_analysis(
    parley: Services, backends: Backends, spawn: Callable[[Coroutine[Any, Any, None], str], None]
) -> None:
    """Build the analysis worker (`app.main.start_workers`) and hand its task to `spawn`."""
    settings = parley.settings
    lease = backends.lease(LEASE_NAME, lease_s=settings.cg_lease_s)
    run_lease = backends.keyed_lease(RUN_LEASE_NAME, lease_s=settings.cg_lease_s)
    worker = AnalysisWorker(
        parley,
        lease,
        run_lease,
        thresholds=Thresholds.from_settings(settings),
        debounce_s=settings.cg_debounce_ms / 1000,
        min_interval_s=settings.cg_min_interval_ms / 1000,
        lease_s=settings.cg_lease_s,
        compute_delay_s=settings.cg_compute_delay_ms / 1000,
    )
    await worker.start_cursor()
    spawn(worker.run(), "analysis-worker")
