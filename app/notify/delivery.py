"""Delivering stored notifications: in-app on the user's topic, Web Push through the queue,
and the followers' `activity` updates.

Stored before delivered (NFR-009): what is published here was committed first, and
`delivery_state` records it, so a batch handled again publishes only what was not published
yet; the stable notification id lets clients drop the rare repeat (an event published just
before a crash, before its state was written).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import timedelta

from app.core.publication import Publication
from app.core.services import Services
from app.domain.models import Discussion, Notification, utcnow
from app.domain.notifications import notification_json
from app.log import topics
from app.log.events import rfc3339
from app.notify import store
from app.notify.webpush import PushJob, PushSender

# Pushes left "pending" by a crashed holder are sent again if they are younger than this.
PUSH_REQUEUE_WINDOW = timedelta(hours=1)
PUSH_REQUEUE_LIMIT = 1_000
# At most one `activity` update per discussion's followers this often: under a steady stream
# a batch every few tens of ms would otherwise send each follower one per batch, most of the
# worker's appends (at 1,000 responses/s on 50 discussions x 10 followers: ~5,000/s). An
# update coming sooner waits for the next batch after this, or for the worker to be idle.
ACTIVITY_INTERVAL_S = 1.0


def publication(notification: Notification) -> Publication:
    """The `notification` event on the user's topic."""
    actor = None
    if notification.actor_id is not None:
        actor = {"id": notification.actor_id, "name": notification.actor_name or notification.actor_id}
    return Publication(
        topics.user(notification.user_id),
        "notification",
        notification.discussion_id,
        actor,
        {"notification": notification_json(notification)},
    )


def push_job(notification: Notification) -> PushJob:
    """What the service worker (static/sw.js) receives: enough to show and to open."""
    return PushJob(
        notification_id=notification.id,
        user_id=notification.user_id,
        payload={"notification": notification_json(notification)},
        urgency="high" if notification.priority == "high" else "normal",
    )


class Delivery:
    def __init__(
        self, parley: Services, pusher: PushSender, *, activity_interval_s: float = ACTIVITY_INTERVAL_S
    ) -> None:
        self._parley = parley
        self._pusher = pusher
        self._interval_s = activity_interval_s
        # Activity updates waiting for their discussion's interval: discussion id -> followers.
        self._waiting: dict[str, set[str]] = {}
        self._titles: dict[str, tuple[str, str]] = {}  # discussion id -> (title, last activity)
        self._sent_at: dict[str, float] = {}  # discussion id -> monotonic time of its last update

    async def notifications(self, notifications: Iterable[Notification]) -> None:
        """Publish what is pending in-app (one batch: `Services.publish_many`, each user's in the
        order given), queue what is pending for Web Push, and record it once all is appended."""
        publications: list[Publication] = []
        published: list[str] = []
        for notification in notifications:
            if notification.delivery_state == "pending":
                publications.append(publication(notification))
                published.append(notification.id)
            if notification.push_state == "pending":
                await self._pusher.enqueue(push_job(notification))
        await self._parley.publish_many(publications)
        await store.mark_published(self._parley.db, published)

    async def activity(self, activity: dict[str, set[str]], titles: dict[str, tuple[str, str]]) -> None:
        """One `activity` update per follower and discussion (FR-008) for the batch, or later
        (`ACTIVITY_INTERVAL_S`). `titles`: discussion id -> (title, last activity)."""
        for discussion_id, followers in activity.items():
            self._waiting.setdefault(discussion_id, set()).update(followers)
        self._titles |= titles
        now = time.monotonic()
        due = [d for d in self._waiting if d not in self._sent_at or now - self._sent_at[d] >= self._interval_s]
        await self._send_activity({d: self._waiting.pop(d) for d in due}, now)

    async def flush_activity(self) -> None:
        """The worker is idle: send what waits now."""
        waiting, self._waiting = self._waiting, {}
        await self._send_activity(waiting, time.monotonic())

    def drop_activity(self) -> None:
        """The lease is lost: the new holder sends its own (and REST has the counts)."""
        self._waiting.clear()

    async def _send_activity(self, activity: dict[str, set[str]], now: float) -> None:
        """Not durable: an indicator, corrected by the next one; REST (/api/me/follows) is the
        truth after a reconnect. Counts are read now, so a later update is never staler."""
        self._sent_at = {d: at for d, at in self._sent_at.items() if now - at < self._interval_s}  # bounded
        if not activity:
            return
        for discussion_id in activity:
            self._sent_at[discussion_id] = now
        counts = await store.unread_of_followers(self._parley.db, list(activity))
        updates: list[Publication] = []
        for (user_id, discussion_id), count in sorted(counts.items()):
            if user_id in activity.get(discussion_id, ()) and discussion_id in self._titles:
                title, last_activity_at = self._titles[discussion_id]
                payload = {
                    "discussion_id": discussion_id,
                    "title": title,
                    "unread_count": count,
                    "last_activity_at": last_activity_at,
                }
                updates.append(
                    Publication(topics.user(user_id), "activity", discussion_id, None, payload, durable=False)
                )
        self._titles = {d: t for d, t in self._titles.items() if d in self._waiting}
        await self._parley.publish_many(updates)

    async def requeue_pending_pushes(self) -> None:
        """Pushes a crashed holder had queued but not finished: send them (again)."""
        for notification in await store.pending_pushes(
            self._parley.db, utcnow() - PUSH_REQUEUE_WINDOW, PUSH_REQUEUE_LIMIT
        ):
            await self._pusher.enqueue(push_job(notification))


def titles_of(discussions: Iterable[Discussion]) -> dict[str, tuple[str, str]]:
    """What an `activity` update says of each discussion: its title and last activity."""
    return {d.id: (d.title, rfc3339(d.last_activity_at)) for d in discussions}
