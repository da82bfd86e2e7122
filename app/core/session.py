"""The transport-agnostic half of a real-time connection.

A `StreamSession` is one client's view of the log: who it is, which topics it reads (the
discussions it named, its own user topic, and the broadcast topic: API.md, Streams), and
where it stands. SSE, WebSocket and long-poll are thin adapters that move its events.

Resuming without gaps or repeats: the session subscribes to the hub *first* (live events start
buffering), then reads the log after the client's cursor, then hands out the buffered live
events, skipping every position it has already given. So an event appended while catching up
is delivered exactly once, whichever path saw it first.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from app.auth import Identity
from app.core.hub import Subscription
from app.core.services import Services
from app.errors import NotFound
from app.log import topics
from app.log.cursor import Cursor, InvalidCursor
from app.log.eventlog import CursorUnavailable
from app.log.events import Event
from app.presence.store import Status

MAX_DISCUSSIONS_PER_CONNECTION = 50


class StreamSession:
    def __init__(self, parley: Services, identity: Identity, discussion_ids: Iterable[str]) -> None:
        self._parley = parley
        self.identity = identity
        self.discussion_ids: list[str] = list(dict.fromkeys(discussion_ids))
        self.topics = [topics.discussion(d) for d in self.discussion_ids]
        self.topics += [topics.user(identity.user_id), topics.BROADCAST]
        self._subscription: Subscription | None = None
        # Presence (app/core/presence_tracker.py): this connection's id there while open, its status.
        self.presence_id: str | None = None
        self.status: Status = "online"
        # One of the user's open-stream slots in this process (429 past the cap), held until close.
        self._slot = parley.stream_slots.acquire(identity.user_id, self)

    @property
    def subscription(self) -> Subscription:
        if self._subscription is None:
            raise RuntimeError("session not open")
        return self._subscription

    async def open(self, resume: str | None) -> list[Event]:
        """Subscribe, then return what the client missed since `resume` (or `sync_required`)."""
        parley = self._parley
        subscription = parley.hub.subscribe(self.topics, parley.settings.max_buffered_events)
        self._subscription = subscription
        subscription.on_revoke = self.remove_discussion  # a membership change (app/core/access_watch.py)
        try:
            self.presence_id = await parley.presence.connect(self)
            if not resume:
                return subscription.take()
            try:
                cursor = Cursor.parse(resume)
                missed = await parley.log.read_after(self.topics, cursor, parley.settings.max_catchup_events)
            except InvalidCursor:
                return await self._sync_required("invalid_cursor")
            except CursorUnavailable as unavailable:
                return await self._sync_required(unavailable.reason)
            subscription.last = max(subscription.last, cursor.position)
            delivered = []
            for event in missed:
                if event.position > subscription.last:
                    delivered.append(event)
                    subscription.last = event.position
            return delivered + subscription.take()
        except BaseException:
            self._leave()
            raise

    async def _sync_required(self, reason: str) -> list[Event]:
        """Tell the client to refetch over REST and go on from the head of the log."""
        head = await self._parley.log.head()
        subscription = self.subscription
        subscription.last = max(subscription.last, head.position)
        notice = Event.synthetic(head, "sync_required", {"reason": reason})
        return [notice, *subscription.take()]

    async def next_events(self, timeout_s: float) -> list[Event]:
        """Live events, waiting at most `timeout_s`. Raises `hub.SlowConsumer` when dropped, and
        `SessionIdle` (a SlowConsumer) after a `session_idle` event when idle (FR-035)."""
        notice = self.idle_notice()
        if notice is not None:
            return notice
        return await self.subscription.next_events(timeout_s)

    def idle_notice(self) -> list[Event] | None:
        """None while the session is active; once idle (FR-035), `[session_idle]`, and
        `SessionIdle` on the next call. Transports that do not wait in `next_events` (the lean
        stream path) ask here on their own timer."""
        return self._parley.presence.idle_notice(self.presence_id, self._notice)

    def _notice(self, event_type: str) -> Event:
        cursor = Cursor(self._parley.log.epoch, self.subscription.last)
        return Event.synthetic(cursor, event_type, {"reason": "idle"})

    async def set_status(self, status: Status) -> None:
        """This connection's presence: "online" (page visible) or "away" (hidden). For a
        WebSocket's `{"type":"presence","status"}`; validate the value first (`STATUSES`)."""
        if self.presence_id is not None:
            await self._parley.presence.set_status(self.presence_id, status)

    async def set_typing(self, discussion_id: str, typing: bool) -> None:
        """A typing signal for one of this session's discussions (`{"type":"typing",...}`).
        Throttled by the store, never an error; raises `NotFound` for a discussion this session
        does not read (its access was checked when it was added)."""
        if discussion_id not in self.discussion_ids:
            raise NotFound(f"not subscribed to discussion {discussion_id[:64]!r}")
        await self._parley.presence.typing(discussion_id, self.identity, typing)

    def seconds_until_expiry(self) -> float:
        return self.identity.expires_at - time.time()

    def auth_expired(self) -> Event:
        """Sent as the last event when the token expires; carries no new position."""
        cursor = Cursor(self._parley.log.epoch, self.subscription.last)
        return Event.synthetic(cursor, "auth_expired", {"reason": "token_expired"})

    def add_discussion(self, discussion_id: str) -> None:
        """Start reading one more discussion (read access is the caller's to check). Live
        events only: a client that needs what came before resumes from its cursor."""
        if discussion_id in self.discussion_ids:
            return
        topic = topics.discussion(discussion_id)
        self.discussion_ids.append(discussion_id)
        self.topics.append(topic)
        self.subscription.add_topic(topic)
        self._parley.presence.nudge()  # join the new discussion's presence now, not at the next refresh

    def remove_discussion(self, discussion_id: str) -> None:
        if discussion_id not in self.discussion_ids:
            return
        topic = topics.discussion(discussion_id)
        self.discussion_ids.remove(discussion_id)
        self.topics.remove(topic)
        self.subscription.remove_topic(topic)
        self._parley.presence.nudge()

    async def resume(self, cursor: str) -> list[Event]:
        """Start over from `cursor` on the same topics, for a transport whose client asks to
        resume without reconnecting (a WebSocket's `resume` message). Same contract as `open`."""
        self._leave()
        return await self.open(cursor)

    def refresh(self, identity: Identity) -> None:
        """Swap in a newer token's identity (a WebSocket's `auth` message). The session's topics
        belong to one user, so a token for somebody else is refused."""
        if identity.user_id != self.identity.user_id:
            raise ValueError("a session keeps its user: the new token is for someone else")
        self.identity = identity

    def close(self) -> None:
        """The connection is over: leave, and give back its stream slot."""
        self._leave()
        self._slot.release()

    def _leave(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
        if self.presence_id is not None:
            self._parley.presence.disconnect(self.presence_id)
            self.presence_id = None
