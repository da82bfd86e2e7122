"""The notification worker: turns journal events (`response_posted`, `analysis_updated`) into
stored, delivered notifications, a batch at a time.

Fed by the event log, off the request path: a post appends `response_posted` and returns. The
journal is read by `app.log.journal_consumer` (one lease holder per cluster, resuming from a
checkpoint saved after each batch; a batch is handled again after a crash or a lost lease).
Per batch, with a fixed number of queries whatever its size (issue 13: one per kind):
1. `items.parse` reads the events; `store.gather` reads the discussions, their followers, the
   replied-to responses' authors, the mentioned names' users and which of them may read
   the discussion (`app.domain.access`, the one read rule);
2. `store.about` reads the concerned users' preferences, push subscriptions and unread
   `activity` notifications; `rules.decide` says who gets what;
3. `store.insert_new` stores the new rows in one INSERT, idempotent by the unique (source
   event, recipient, type), and commits: stored before delivered (NFR-009);
4. `store.undelivered` finds what of the batch is still to publish or push (this run's rows or
   an earlier run's), `Delivery` publishes it, then sends one `activity` update per follower
   and discussion for the whole batch (at most one a second per discussion: `Delivery`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from app.core.active_users import ActiveUsers
from app.core.backends import Backends
from app.core.services import Services
from app.log.cursor import Cursor
from app.log.events import Event
from app.log.journal_consumer import JournalConsumer, JournalHandler
from app.notify import rules, store
from app.notify.delivery import Delivery, titles_of
from app.notify.items import Item, Posted, names_by_discussion, parse
from app.notify.webpush import PushSender, load_vapid

LEASE_NAME = "notify"
BATCH_LIMIT = 1000
# After a batch that was not full, wait this long before reading the next (JournalConsumer).
BATCH_LINGER_S = 0.05


class NotifyHandler(JournalHandler):
    def __init__(
        self, parley: Services, active: ActiveUsers, delivery: Delivery, *, event_delay_s: float = 0.0
    ) -> None:
        self._parley = parley
        self._active = active
        self._delivery = delivery
        self._event_delay_s = event_delay_s  # tests: widen the window of a batch in progress

    async def acquired(self) -> None:
        await self._delivery.requeue_pending_pushes()

    async def released(self) -> None:
        self._delivery.drop_activity()

    async def idle(self) -> None:
        await self._delivery.flush_activity()

    async def handle(self, start: Cursor, events: list[Event], lost: asyncio.Event) -> bool:
        items = [item for item in map(parse, events) if item is not None]
        # With a test delay, one event at a time (so a test can stop the worker mid-batch).
        step = 1 if self._event_delay_s else max(1, len(items))
        activity: dict[str, set[str]] = {}
        titles: dict[str, tuple[str, str]] = {}
        for first in range(0, len(items), step):
            if lost.is_set():
                return False
            decision, facts = await self._store(items[first : first + step], lost)
            if decision is None:
                return False
            for discussion_id, followers in decision.activity.items():
                activity.setdefault(discussion_id, set()).update(followers)
            titles |= titles_of(facts.discussions.values())
            await asyncio.sleep(self._event_delay_s)
        if lost.is_set():
            return False
        await self._delivery.activity(activity, titles)
        return True

    async def _store(self, items: list[Item], lost: asyncio.Event) -> tuple[rules.Decision | None, store.Facts]:
        """Store what `items` cause and deliver it; no decision if the lease was lost first."""
        db = self._parley.db
        facts = await store.gather(
            db,
            {item.discussion_id for item in items},
            {i.parent_id for i in items if isinstance(i, Posted) and i.parent_id is not None},
            names_by_discussion(items),
        )
        recipients = await store.about(db, rules.concerned(items, facts), list(facts.discussions))
        decision = rules.decide(items, facts, recipients)
        rows = [
            rules.notification_row(
                item, planned, push=await rules.should_push(planned.user_id, recipients, self._active)
            )
            for item, planned in decision.notify
        ]
        if lost.is_set():
            return None, facts
        await store.insert_new(db, rows)
        if lost.is_set():  # the new holder delivers what we stored
            return None, facts
        order = {item.cursor: index for index, item in enumerate(items)}
        pending = sorted(await store.undelivered(db, list(order)), key=lambda n: order[n.source_event])
        await self._delivery.notifications(pending)
        return decision, facts


@dataclass(frozen=True)
class NotifyParts:
    """What every process builds, workers or not: the push sender (the page asks any web
    process for its VAPID key; its `run` is the worker's to spawn) and the active users (each
    web process runs it, so the notification worker, wherever it runs, knows who is online)."""

    pusher: PushSender
    active: ActiveUsers


async def notify_parts(parley: Services, backends: Backends) -> NotifyParts:
    settings = parley.settings
    vapid = await asyncio.to_thread(load_vapid, settings.vapid_private_key, settings.data_dir)
    pusher = PushSender(
        vapid,
        subject=settings.vapid_subject,
        db=parley.db,
        metrics=parley.metrics,
        timeout_s=settings.push_timeout_s,
        concurrency=settings.push_concurrency,
        backoff_s=settings.push_backoff_s,
        allow_private=settings.push_allow_insecure,
    )
    return NotifyParts(pusher, backends.active_users(parley.presence))


async def start_notifications(
    parley: Services,
    backends: Backends,
    parts: NotifyParts,
    spawn: Callable[[Coroutine[Any, Any, None], str], None],
) -> None:
    """Build the notification worker (`app.main.start_workers`) and hand its tasks to `spawn`.

    Each task closes what it owns when cancelled, so shutdown needs nothing more here."""
    settings = parley.settings
    lease = backends.lease(LEASE_NAME, lease_s=settings.notify_lease_s)
    handler = NotifyHandler(
        parley, parts.active, Delivery(parley, parts.pusher), event_delay_s=settings.notify_event_delay_ms / 1000
    )
    consumer = JournalConsumer(
        "notification worker",
        parley.log,
        lease,
        handler,
        lease_s=settings.notify_lease_s,
        batch_limit=BATCH_LIMIT,
        linger_s=BATCH_LINGER_S,
        on_lag=parley.metrics.notify_lag.set,
    )
    await consumer.initialise()
    spawn(parts.pusher.run(), "push-sender")
    spawn(consumer.run(), "notify-worker")
