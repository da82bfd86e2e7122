"""The notification worker: turns `response_posted` events into stored, delivered notifications.

Design, and why:
- *Fed by the event log, off the request path.* A post appends `response_posted` and returns;
  this worker reads the log's journal (`EventLog.read_journal`: every durable event of every
  topic after a cursor, kept for the retention window) and applies `app.domain.notifications.plan`.
- *Exactly one worker per cluster, resuming from a checkpoint.* Every process runs this task,
  but only the holder of a lease (`app.infra.lease`: a Redis key with an expiry, renewed while
  working; in-process when embedded) reads and processes. After each batch it saves the
  position of the batch's last event as the checkpoint, only while it still holds the lease.
  A holder killed mid-batch (SIGKILL, OOM) saves nothing; its lease expires after
  `notify_lease_s` and the next holder (another process, or the same one restarted) reads the
  whole batch again from the checkpoint. We chose this over a Redis consumer group because one
  code path then serves both backends (the embedded log has no consumer groups), the journal
  is read in global order (activity updates can be batched per discussion), and the
  checkpoint is one cursor, the same kind clients resume with.
- *Stored before delivered, idempotent on replay (NFR-009).* Notifications are inserted, and
  committed, before anything is published; a unique constraint on (source event, recipient,
  type) means reprocessing finds the rows instead of making new ones. In-app delivery
  (`delivery_state`) and Web Push (`push_state`) are recorded, so a replay publishes only what
  was not published yet; the stable notification id lets clients drop the rare repeat (an
  event published just before a crash, before its state was written).
- *Batched activity.* Followers get one `activity` update per discussion per batch (unread
  count and last activity from the database, so a lost or merged update corrects itself), and
  at most one *unread* `activity` notification per discussion.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from app.cancellation import raise_if_cancelling, stop_if_cancelled
from app.core.active_users import ActiveUsers
from app.core.backends import Backends
from app.core.services import Services
from app.domain.models import (
    Discussion,
    DiscussionMember,
    Follow,
    Notification,
    NotificationPreferences,
    PushSubscription,
    Response,
    User,
    utcnow,
)
from app.domain.notifications import (
    DEFAULT_PREFERENCES,
    Planned,
    excerpt,
    mentioned_names,
    notification_json,
    plan,
    plan_common_ground,
)
from app.infra.lease import Lease
from app.log import topics
from app.log.cursor import Cursor, InvalidCursor
from app.log.eventlog import CursorUnavailable
from app.log.events import Event, now_ms, rfc3339
from app.notify.webpush import PushJob, PushSender, load_vapid

log = logging.getLogger(__name__)

LEASE_NAME = "notify"
BATCH_LIMIT = 200
# After a batch that was not full, wait this long before reading the next (see `run`).
BATCH_LINGER_S = 0.05
# How long one journal read waits for new events before the lease is renewed again.
READ_WAIT_S = 1.0
MAX_BACKOFF_S = 5.0
MAX_ATTEMPTS_PER_EVENT = 5
# Pushes left "pending" by a crashed holder are sent again if they are younger than this.
PUSH_REQUEUE_WINDOW = timedelta(hours=1)
PUSH_REQUEUE_LIMIT = 1_000
_DISCUSSION_PREFIX = topics.discussion("")
_HANDLED = frozenset({"response_posted", "analysis_updated"})


@dataclass
class _BatchContext:
    """What the events of one batch need, read once for the whole batch (`_prefetch`)."""

    discussions: dict[str, Discussion] = field(default_factory=dict)
    followers: dict[str, list[str]] = field(default_factory=dict)  # discussion id -> user ids


def preferences_of(row: NotificationPreferences | None) -> dict[str, bool]:
    if row is None:
        return dict(DEFAULT_PREFERENCES)
    return {key: bool(getattr(row, key)) for key in DEFAULT_PREFERENCES}


class NotifyWorker:
    def __init__(
        self,
        parley: Services,
        lease: Lease,
        active: ActiveUsers,
        pusher: PushSender,
        *,
        lease_s: float,
        event_delay_s: float = 0.0,
    ) -> None:
        self._parley = parley
        self._lease = lease
        self._active = active
        self._pusher = pusher
        self._lease_s = lease_s
        self._event_delay_s = event_delay_s
        # Failed attempts per event cursor in the current batch (cleared after each batch).
        self._failures: dict[str, int] = {}

    async def start_cursor(self) -> None:
        """At start-up, before serving: a cluster's first checkpoint is the head of the log,
        so events posted once the server answers are never missed."""
        await self._lease.initialise(str(await self._parley.log.head()))

    async def run(self) -> None:
        """Owned by the app; cancelled on shutdown (then the lease is released at once)."""
        holder = False
        backoff_s = 0.1
        try:
            while True:
                raise_if_cancelling()
                try:
                    if not await self._lease.hold():
                        holder = False
                        await asyncio.sleep(self._lease_s / 3)
                        continue
                    if not holder:
                        holder = True
                        log.info("notification worker: this process holds the lease")
                        await self._requeue_pending_pushes()
                    handled = await self._step()
                    backoff_s = 0.1
                    if 0 < handled < BATCH_LIMIT:
                        # Let the next batch fill: per batch the worker pays a checkpoint read
                        # and save, a journal read and two queries, so under a steady stream
                        # of events one batch every BATCH_LINGER_S costs far less than one per
                        # event (at 200 events/s: ~1 event per batch without this).
                        await asyncio.sleep(BATCH_LINGER_S)
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    stop_if_cancelled(error)
                    # Log, back off and go on: the next step starts again from the checkpoint.
                    log.exception("notification worker step failed; retrying in %.1fs", backoff_s)
                    await asyncio.sleep(backoff_s)
                    backoff_s = min(backoff_s * 2, MAX_BACKOFF_S)
        finally:
            try:
                if holder:
                    await self._lease.release()
            except Exception:  # Redis gone at shutdown: the lease simply expires
                log.warning("notification worker: could not release the lease")
            finally:
                await self._lease.close()

    async def _cursor(self) -> Cursor:
        text = await self._lease.checkpoint()
        if text is not None:
            try:
                return Cursor.parse(text)
            except InvalidCursor:
                log.warning("notification worker: unreadable checkpoint %r; starting from the head", text)
        head = await self._parley.log.head()
        await self._lease.save(str(head))
        return head

    async def _step(self) -> int:
        """One batch from the checkpoint; returns how many events it held."""
        cursor = await self._cursor()
        try:
            events = await self._parley.log.read_journal(cursor, BATCH_LIMIT, READ_WAIT_S)
        except CursorUnavailable as unavailable:
            # Older than the log's retention, or another epoch (embedded restart, flushed
            # Redis): what was there is gone; go on from the present and say so.
            log.warning("notification worker: checkpoint %s unusable (%s); skipping to the head", cursor, unavailable)
            await self._lease.save(str(await self._parley.log.head()))
            return 0
        if not events:
            self._parley.metrics.notify_lag.set(0)  # caught up
            return 0
        # Renewed in the background while the batch runs, so a slow database or a full push
        # queue does not let the lease lapse mid-batch.
        lost = asyncio.Event()
        keeper = asyncio.create_task(self._keep_lease(lost), name="notify-lease")
        try:
            done = await self._handle(events, lost)
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        if done:
            self._parley.metrics.notify_lag.set(max(0, now_ms() - events[-1].position.ms) / 1000)
        if done and not await self._lease.save(events[-1].cursor):
            log.warning("notification worker: lease lost before saving the checkpoint; the new holder redoes it")
        return len(events)

    async def _keep_lease(self, lost: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 3)
            try:
                held = await self._lease.hold()
            except Exception as error:  # unknown (Redis away): keep going, the save will tell
                stop_if_cancelled(error)
                log.warning("notification worker: lease renewal failed: %s", error)
                continue
            if not held:
                lost.set()
                return

    async def _handle(self, events: list[Event], lost: asyncio.Event) -> bool:
        """Process one batch; False if the lease was lost (its new holder redoes the batch)."""
        activity: dict[str, set[str]] = {}
        context = await self._prefetch(events)
        for event in events:
            if lost.is_set():
                return False
            if event.type in _HANDLED and event.topic.startswith(_DISCUSSION_PREFIX):
                try:
                    if event.type == "analysis_updated":
                        await self._process_common_ground(event)
                        continue
                    discussion_id, followers = await self._process(event, context)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # Retry the batch (from the checkpoint) a few times; then an event that
                    # always fails is skipped rather than blocking every later notification.
                    self._failures[event.cursor] = self._failures.get(event.cursor, 0) + 1
                    if self._failures[event.cursor] < MAX_ATTEMPTS_PER_EVENT:
                        raise
                    log.exception("notification worker: giving up on event %s", event.cursor)
                    continue
                if followers:
                    activity.setdefault(discussion_id, set()).update(followers)
            if self._event_delay_s:
                await asyncio.sleep(self._event_delay_s)
        await self._send_activity(activity)
        self._failures.clear()
        return True

    async def _prefetch(self, events: list[Event]) -> _BatchContext:
        """The discussions of the batch's responses and their followers, in two queries for
        the whole batch instead of two per event (at 1,000 responses/s, per-event queries are
        what the worker spends its time on)."""
        ids = {
            event.topic[len(_DISCUSSION_PREFIX) :]  # the topic names the discussion: no need to parse the body
            for event in events
            if event.type == "response_posted" and event.topic.startswith(_DISCUSSION_PREFIX)
        }
        context = _BatchContext()
        if not ids:
            return context
        async with self._parley.db.session() as session:
            discussions = await session.exec(select(Discussion).where(col(Discussion.id).in_(ids)))
            context.discussions = {discussion.id: discussion for discussion in discussions.all()}
            follows = await session.exec(
                select(Follow.discussion_id, Follow.user_id).where(col(Follow.discussion_id).in_(ids))
            )
            for discussion_id, user_id in follows.all():
                context.followers.setdefault(discussion_id, []).append(user_id)
        return context

    async def _process(self, event: Event, context: _BatchContext) -> tuple[str, list[str]]:
        envelope = event.as_dict()
        response: dict[str, Any] = envelope["payload"]["response"]
        discussion_id: str = envelope["discussion_id"]
        actor: dict[str, str] = envelope.get("user") or {}
        actor_id = actor.get("id", "")
        body: str = response.get("body", "")
        discussion = context.discussions.get(discussion_id)
        if discussion is None:
            return discussion_id, []
        followers = context.followers.get(discussion_id, [])
        names = mentioned_names(body)
        if not response.get("parent_id") and not names and not set(followers) - {actor_id}:
            return discussion_id, []  # no reply, no mention, nobody else following: nobody to tell
        async with self._parley.db.session() as session:
            parent_author = None
            if response.get("parent_id"):
                parent = await session.get(Response, int(response["parent_id"]))
                parent_author = None if parent is None else parent.author_id
            mentioned = await self._mentioned(session, discussion, names)
            concerned = {*mentioned, *followers, *([parent_author] if parent_author else [])}
            rows = await session.exec(
                select(NotificationPreferences).where(col(NotificationPreferences.user_id).in_(concerned))
            )
            preferences = {row.user_id: preferences_of(row) for row in rows.all()}
            decided = plan(
                actor_id=actor_id,
                parent_author_id=parent_author,
                mentioned_user_ids=mentioned,
                follower_ids=followers,
                preferences=preferences,
            )
            stored = await self._store(
                session,
                event,
                decided.notifications,
                preferences,
                discussion_id=discussion_id,
                response_id=int(response["id"]),
                actor=actor,
                text=excerpt(body),
            )
        await self._deliver(stored)
        return discussion_id, decided.activity_updates

    async def _store(
        self,
        session: AsyncSession,
        event: Event,
        planned_notifications: list[Planned],
        preferences: dict[str, dict[str, bool]],
        *,
        discussion_id: str,
        response_id: int | None,
        actor: dict[str, str],
        text: str,
    ) -> list[Notification]:
        """Insert what is not stored yet for this event (idempotent on replay), and commit."""
        existing = {
            (n.user_id, n.type): n
            for n in (await session.exec(select(Notification).where(Notification.source_event == event.cursor))).all()
        }
        subscribed = await self._with_subscriptions(session, {p.user_id for p in planned_notifications})
        stored: list[Notification] = []
        for planned in planned_notifications:
            notification = existing.get((planned.user_id, planned.type))
            if notification is None:
                if planned.type == "activity" and await self._has_unread_activity(
                    session, planned.user_id, discussion_id
                ):
                    continue  # batched: one unread activity notification per discussion
                wants_push = (
                    planned.user_id in subscribed
                    and preferences.get(planned.user_id, DEFAULT_PREFERENCES)["push"]
                    and not await self._active.is_user_active(planned.user_id)
                )
                notification = Notification(
                    id=secrets.token_urlsafe(12),
                    user_id=planned.user_id,
                    type=planned.type,
                    priority=planned.priority,
                    source_event=event.cursor,
                    discussion_id=discussion_id,
                    response_id=response_id,
                    actor_id=actor.get("id") or None,
                    actor_name=actor.get("name"),
                    excerpt=text,
                    push_state="pending" if wants_push else "none",
                )
                session.add(notification)
            stored.append(notification)
        # Stored before delivered. A unique-constraint clash (a stale holder racing us)
        # raises here; the loop then retries the batch from the checkpoint.
        await session.commit()
        return stored

    async def _process_common_ground(self, event: Event) -> None:
        """FR-014. The analysis publishes `analysis_updated` on the discussion's topic; when it
        judges new common ground significant it lists it as `payload.new_common_ground`
        (proposition ids, or `{"id", "text"}` objects). Followers who kept `common_ground` on
        are notified."""
        envelope = event.as_dict()
        payload = envelope.get("payload") or {}
        new = payload.get("new_common_ground")
        discussion_id = envelope.get("discussion_id")
        if not new or not isinstance(new, list) or not isinstance(discussion_id, str):
            return
        first = new[0]
        if isinstance(first, dict):
            text = str(first.get("text", ""))
        else:
            # The analysis document (app/analysis/rules.py) lists ids; their text is in it too.
            texts = {p.get("id"): p.get("text") for p in payload.get("propositions") or [] if isinstance(p, dict)}
            text = str(texts.get(first) or "")
        text = excerpt(text) if text else f"{len(new)} new point(s) of common ground"
        actor: dict[str, str] = envelope.get("user") or {}
        async with self._parley.db.session() as session:
            followers = list(
                (await session.exec(select(Follow.user_id).where(Follow.discussion_id == discussion_id))).all()
            )
            rows = await session.exec(
                select(NotificationPreferences).where(col(NotificationPreferences.user_id).in_(followers))
            )
            preferences = {row.user_id: preferences_of(row) for row in rows.all()}
            planned = plan_common_ground(actor_id=actor.get("id", ""), follower_ids=followers, preferences=preferences)
            stored = await self._store(
                session,
                event,
                planned,
                preferences,
                discussion_id=discussion_id,
                response_id=None,
                actor=actor,
                text=text,
            )
        await self._deliver(stored)

    async def _mentioned(self, session: AsyncSession, discussion: Discussion, names: list[str]) -> list[str]:
        """Users named in the body who can read the discussion (NFR-014: never notify others)."""
        if not names:
            return []
        rows = await session.exec(select(User.id).where(func.lower(User.name).in_(names)))
        candidates = list(rows.all())
        if discussion.visibility != "private" or not candidates:
            return candidates
        members = await session.exec(
            select(DiscussionMember.user_id).where(
                DiscussionMember.discussion_id == discussion.id, col(DiscussionMember.user_id).in_(candidates)
            )
        )
        allowed = {*members.all(), discussion.created_by}
        return [user_id for user_id in candidates if user_id in allowed]

    async def _with_subscriptions(self, session: AsyncSession, user_ids: Collection[str]) -> set[str]:
        if not user_ids:
            return set()
        rows = await session.exec(
            select(PushSubscription.user_id).where(col(PushSubscription.user_id).in_(user_ids)).distinct()
        )
        return set(rows.all())

    async def _has_unread_activity(self, session: AsyncSession, user_id: str, discussion_id: str) -> bool:
        rows = await session.exec(
            select(Notification.id)
            .where(
                Notification.user_id == user_id,
                Notification.discussion_id == discussion_id,
                Notification.type == "activity",
                col(Notification.read_at).is_(None),
            )
            .limit(1)
        )
        return rows.first() is not None

    async def _deliver(self, notifications: list[Notification]) -> None:
        published = []
        for notification in notifications:
            if notification.delivery_state == "pending":
                actor = None
                if notification.actor_id is not None:
                    actor = {"id": notification.actor_id, "name": notification.actor_name or notification.actor_id}
                await self._parley.publish(
                    topics.user(notification.user_id),
                    "notification",
                    discussion_id=notification.discussion_id,
                    user=actor,
                    payload={"notification": notification_json(notification)},
                )
                published.append(notification.id)
            if notification.push_state == "pending":
                await self._pusher.enqueue(push_job(notification))
        if published:
            async with self._parley.db.session() as session:
                await session.exec(
                    update(Notification).where(col(Notification.id).in_(published)).values(delivery_state="published")
                )
                await session.commit()

    async def _send_activity(self, activity: dict[str, set[str]]) -> None:
        """One `activity` update per follower and discussion for the whole batch (FR-008)."""
        for discussion_id, user_ids in activity.items():
            async with self._parley.db.session() as session:
                discussion = await session.get(Discussion, discussion_id)
                if discussion is None:
                    continue
                unread = await session.exec(
                    select(Follow.user_id, func.count(col(Response.id)))
                    .select_from(Follow)
                    .outerjoin(
                        Response,
                        and_(
                            col(Response.discussion_id) == col(Follow.discussion_id),
                            col(Response.id) > col(Follow.last_read_response_id),
                            col(Response.author_id) != col(Follow.user_id),
                            col(Response.deleted).is_(False),
                        ),
                    )
                    .where(Follow.discussion_id == discussion_id, col(Follow.user_id).in_(user_ids))
                    .group_by(col(Follow.user_id))
                )
                counts = list(unread.all())
            for user_id, count in counts:
                # Not durable: an indicator, corrected by the next one; REST (/api/me/follows)
                # is the truth after a reconnect.
                await self._parley.publish(
                    topics.user(user_id),
                    "activity",
                    discussion_id=discussion_id,
                    user=None,
                    payload={
                        "discussion_id": discussion_id,
                        "title": discussion.title,
                        "unread_count": count,
                        "last_activity_at": rfc3339(discussion.last_activity_at),
                    },
                    durable=False,
                )

    async def _requeue_pending_pushes(self) -> None:
        """Pushes a crashed holder had queued but not finished: send them (again)."""
        since = utcnow() - PUSH_REQUEUE_WINDOW
        async with self._parley.db.session() as session:
            rows = await session.exec(
                select(Notification)
                .where(Notification.push_state == "pending", col(Notification.created_at) > since)
                .limit(PUSH_REQUEUE_LIMIT)
            )
            pending = list(rows.all())
        for notification in pending:
            await self._pusher.enqueue(push_job(notification))


def push_job(notification: Notification) -> PushJob:
    """What the service worker (static/sw.js) receives: enough to show and to open."""
    return PushJob(
        notification_id=notification.id,
        user_id=notification.user_id,
        payload={"notification": notification_json(notification)},
        urgency="high" if notification.priority == "high" else "normal",
    )


async def start_notifications(
    extensions: dict[str, Any],
    parley: Services,
    backends: Backends,
    spawn: Callable[[Coroutine[Any, Any, None], str], None],
) -> None:
    """Build the notification parts for `create_app` and hand their tasks to `spawn`.

    Each task closes what it owns when cancelled, so shutdown needs nothing more here."""
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
    active = backends.active_users(parley.presence)
    lease = backends.lease(LEASE_NAME, lease_s=settings.notify_lease_s)
    worker = NotifyWorker(
        parley,
        lease,
        active,
        pusher,
        lease_s=settings.notify_lease_s,
        event_delay_s=settings.notify_event_delay_ms / 1000,
    )
    await worker.start_cursor()
    extensions["parley.push"] = pusher
    spawn(pusher.run(), "push-sender")
    spawn(active.run(), "active-users")
    spawn(worker.run(), "notify-worker")
