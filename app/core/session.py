"""The transport-agnostic half of a real-time connection, which owns its deadlines.

A `StreamSession` is one client's view of the log: who it is, which topics it reads (the
discussions it named, its own user topic, and the broadcast topic: API.md, Streams), where it
stands, and when it must say something or end. Transports (SSE, lean SSE, WebSocket,
long-poll) only frame and write what it tells them, as centrifuge's client does:

- `await session.next()` returns the next `Step`: `Deliver(events)`, `HEARTBEAT` (nothing was
  written for `heartbeat_s`; the transport picks the frame), or `End(reason, notice)`: the
  token expired (`auth_expired`), the user was idle (FR-035, `session_idle`), the connection
  fell too far behind or the log had a gap (`dropped`: resume by cursor), or the server is
  stopping. A transport writes `notice` (if any), then ends. Cancelling `next()` loses nothing.
- A transport that writes without a task per connection (the lean SSE path) gives the session
  a sink (`stream_to`) and has one process-wide timer call `tick()` every `Node.tick_s`, and
  `due()` at each expiry: the same deadlines, with no timer or task per session.

Resuming without gaps or repeats: the session subscribes to the hub *first* (live events start
buffering), then reads the log after the client's cursor, then hands out the buffered live
events, skipping every position it has already given. So an event appended while catching up
is delivered exactly once, whichever path saw it first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from app.auth import Identity
from app.core.hub import SlowConsumer, Subscription
from app.errors import NotFound
from app.log import topics
from app.log.cursor import ORIGIN, Cursor, InvalidCursor
from app.log.eventlog import CursorUnavailable
from app.log.events import Event
from app.presence.store import Status

if TYPE_CHECKING:
    from app.core.node import Node

MAX_DISCUSSIONS_PER_CONNECTION = 50
# `tick()` is called this many times per heartbeat interval; a connection gets a heartbeat after
# that many ticks without a write, so the gap between writes stays within one interval.
TICKS_PER_HEARTBEAT = 2

EndReason = Literal["auth_expired", "idle", "dropped", "stopping"]


@dataclass(frozen=True, slots=True)
class Deliver:
    """Write these events, in order."""

    events: list[Event]


class Heartbeat:
    """Nothing was written for a heartbeat interval: write the transport's heartbeat frame."""

    __slots__ = ()


HEARTBEAT = Heartbeat()


@dataclass(frozen=True, slots=True)
class End:
    """Write `notice` if there is one, then end the connection. An `auth_expired` notice
    carries no new position: it must not move the client's cursor (SSE: no `id:` line)."""

    reason: EndReason
    notice: Event | None = None

    @property
    def notice_moves_cursor(self) -> bool:
        return self.reason != "auth_expired"


Step = Deliver | Heartbeat | End


class StreamSession:
    # Slots: the lean path keeps one session per idle stream; every byte counts (bench/README.md).
    __slots__ = (
        "__weakref__",  # StreamSlots releases the slot of a session collected without close()
        "_ended",
        "_heartbeat_at",
        "_idle",
        "_node",
        "_quiet_ticks",
        "_recheck",
        "_slot",
        "_status",
        "_subscription",
        "_ticked_last",
        "discussion_ids",
        "identity",
        "presence_id",
        "topics",
    )

    def __init__(
        self, node: Node, identity: Identity, discussion_ids: Iterable[str], *, access_checked: bool = False
    ) -> None:
        self._node = node
        self._recheck = access_checked  # ask `Node.recheck_access` again once subscribed
        self.identity = identity
        self.discussion_ids: list[str] = list(dict.fromkeys(discussion_ids))
        self.topics = [topics.discussion(d) for d in self.discussion_ids]
        self.topics += [topics.user(identity.user_id), topics.BROADCAST]
        self._subscription: Subscription | None = None
        # Presence (app/core/presence_tracker.py): this connection's id there while open, its status.
        self.presence_id: str | None = None
        self._status: Status = "online"
        self._idle = False  # the tracker said so (FR-035)
        self._ended: End | None = None
        # Deadlines: the next heartbeat (loop time, for `next`), quiet ticks (for `tick`).
        self._heartbeat_at = 0.0
        self._quiet_ticks = 0
        self._ticked_last = ORIGIN
        # One of the user's open-stream slots in this process (429 past the cap), held until close.
        self._slot = node.stream_slots.acquire(identity.user_id, self)

    @property
    def subscription(self) -> Subscription:
        if self._subscription is None:
            raise RuntimeError("session not open")
        return self._subscription

    async def open(self, resume: str | None) -> list[Event]:
        """Subscribe, then return what the client missed since `resume` (or `sync_required`)."""
        node = self._node
        subscription = node.hub.subscribe(self.topics, node.settings.max_buffered_events)
        self._subscription = subscription
        subscription.on_revoke = self.remove_discussion  # a membership change (app/core/access_watch.py)
        try:
            if self._recheck and node.recheck_access is not None:  # a connect racing a removal (Node)
                for discussion_id in list(self.discussion_ids):
                    if not await node.recheck_access(self.identity, discussion_id):
                        self.remove_discussion(discussion_id)
            self._idle = False  # a new presence connection (`resume`): active again
            self.presence_id = await node.presence.connect(self)
            self._heartbeat_at = asyncio.get_running_loop().time() + node.heartbeat_s
            if not resume:
                return subscription.take()
            try:
                cursor = Cursor.parse(resume)
                missed = await node.event_log.read_after(self.topics, cursor, node.settings.max_catchup_events)
            except InvalidCursor:
                return await self._sync_required("invalid_cursor")
            except CursorUnavailable as unavailable:
                return await self._sync_required(unavailable.reason)
            subscription.last = max(subscription.last, cursor.position)
            delivered = []
            for event in missed:
                if event.position > subscription.last:
                    subscription.last = event.position
                    # A discussion revoked while the catch-up was read stays out of it.
                    if event.topic in subscription.topics:
                        delivered.append(event)
            return delivered + subscription.take()
        except BaseException:
            self._leave()
            raise

    async def _sync_required(self, reason: str) -> list[Event]:
        """Tell the client to refetch over REST and go on from the head of the log."""
        head = await self._node.event_log.head()
        subscription = self.subscription
        subscription.last = max(subscription.last, head.position)
        notice = Event.synthetic(head, "sync_required", {"reason": reason})
        return [notice, *subscription.take()]

    # -- what to write next ------------------------------------------------------------------

    async def next(self) -> Step:
        """Wait for the next thing to write: events, a heartbeat, or the end."""
        heartbeat_s = self._node.heartbeat_s
        clock = asyncio.get_running_loop().time
        while True:
            end = self.due()
            if end is not None:
                return end
            now = clock()
            if now >= self._heartbeat_at:
                self._heartbeat_at = now + heartbeat_s
                return HEARTBEAT
            wait_s = min(self._heartbeat_at - now, self.seconds_until_expiry())
            try:
                events = await self.subscription.next_events(wait_s)
            except SlowConsumer:
                continue  # `due()` says how it ends
            if events:
                self._heartbeat_at = clock() + heartbeat_s
                return Deliver(events)

    def wrote(self) -> None:
        """The transport wrote something else (a reply to its client): count the heartbeat
        interval from now."""
        self._heartbeat_at = asyncio.get_running_loop().time() + self._node.heartbeat_s

    def due(self) -> End | None:
        """The end, if it is due now (expiry, idle, dropped), else None. Synchronous: the lean
        path's timer calls it at each expiry; `next()` and `tick()` call it first."""
        if self._ended is not None:
            return End(self._ended.reason)  # the notice was handed out once
        subscription = self.subscription
        if self.seconds_until_expiry() <= 0:
            return self._end("auth_expired", "token_expired")
        if self._idle:
            return self._end("idle", "idle")
        if subscription.dropped:
            return self._end("stopping" if self._node.hub.stopping else "dropped", None)
        return None

    def _end(self, reason: EndReason, notice_reason: str | None) -> End:
        notice = None
        if notice_reason is not None:
            # A notice for this connection only, at its current position (never stored).
            cursor = Cursor(self._node.event_log.epoch, self.subscription.last)
            event_type = "auth_expired" if reason == "auth_expired" else "session_idle"
            notice = Event.synthetic(cursor, event_type, {"reason": notice_reason})
        self._ended = end = End(reason, notice)
        return end

    def tick(self) -> Step | None:
        """For a process-wide timer, every `Node.tick_s`: the end if due, a heartbeat after
        TICKS_PER_HEARTBEAT ticks with nothing written, else None. Writes are seen as the
        subscription's position moving, so the hot path (the sink) pays nothing for it."""
        end = self.due()
        if end is not None:
            return end
        last = self.subscription.last
        if last != self._ticked_last:
            self._ticked_last = last
            self._quiet_ticks = 1  # written during the tick that just ended
            return None
        self._quiet_ticks += 1
        if self._quiet_ticks < TICKS_PER_HEARTBEAT:
            return None
        self._quiet_ticks = 0
        return HEARTBEAT

    def stream_to(self, sink: Callable[[Event], bool], on_drop: Callable[[], object]) -> list[Event] | None:
        """Hand live events straight to `sink` from now on (see `Subscription.sink`); returns
        what was buffered meanwhile, to write first, or None if the session was already
        dropped (it overflowed while catching up: end, the client resumes)."""
        subscription = self.subscription
        if subscription.dropped:
            return None
        subscription.on_drop = on_drop
        pending = subscription.take()
        subscription.sink = sink
        self._ticked_last = subscription.last
        return pending

    def call_on_drop(self, callback: Callable[[], object]) -> None:
        """`callback` runs once if the hub drops this session (a slow consumer, a log gap):
        e.g. cancel a handler blocked in a send to a client that stopped reading."""
        self.subscription.on_drop = callback

    def fell_behind(self) -> None:
        """The transport's own buffer says its client stopped reading: drop it like the hub
        drops a full subscription."""
        self._node.hub.drop(self.subscription, reason="slow_consumer")

    # -- the token ----------------------------------------------------------------------------

    @property
    def expires_at(self) -> float:
        return self.identity.expires_at

    def seconds_until_expiry(self) -> float:
        return self.identity.expires_at - time.time()

    def refresh(self, identity: Identity) -> None:
        """Swap in a newer token's identity (a WebSocket's `auth` message). The session's topics
        belong to one user, so a token for somebody else is refused."""
        if identity.user_id != self.identity.user_id:
            raise ValueError("a session keeps its user: the new token is for someone else")
        self.identity = identity

    # -- presence ------------------------------------------------------------------------------

    @property
    def status(self) -> Status:
        return self._status

    def apply_status(self, status: Status) -> None:
        """The tracker's word: this connection's status is now `status`."""
        self._status = status

    def went_idle(self) -> None:
        """The tracker's word: neither this connection nor its user did anything for the idle
        timeout (FR-035). The session ends with `session_idle` at its next step."""
        self._idle = True

    async def set_status(self, status: Status) -> None:
        """This connection's presence: "online" (page visible) or "away" (hidden). For a
        WebSocket's `{"type":"presence","status"}`; validate the value first (`STATUSES`)."""
        if self.presence_id is not None:
            await self._node.presence.set_status(self.presence_id, status)

    async def set_typing(self, discussion_id: str, typing: bool) -> None:
        """A typing signal for one of this session's discussions (`{"type":"typing",...}`).
        Throttled by the store, never an error; raises `NotFound` for a discussion this session
        does not read (its access was checked when it was added)."""
        if discussion_id not in self.discussion_ids:
            raise NotFound(f"not subscribed to discussion {discussion_id[:64]!r}")
        await self._node.presence.typing(discussion_id, self.identity, typing)

    # -- topics --------------------------------------------------------------------------------

    def add_discussion(self, discussion_id: str) -> None:
        """Start reading one more discussion (read access is the caller's to check). Live
        events only: a client that needs what came before resumes from its cursor."""
        if discussion_id in self.discussion_ids:
            return
        topic = topics.discussion(discussion_id)
        self.discussion_ids.append(discussion_id)
        self.topics.append(topic)
        self.subscription.add_topic(topic)
        self._node.presence.nudge()  # join the new discussion's presence now, not at the next refresh

    def remove_discussion(self, discussion_id: str) -> None:
        if discussion_id not in self.discussion_ids:
            return
        topic = topics.discussion(discussion_id)
        self.discussion_ids.remove(discussion_id)
        self.topics.remove(topic)
        self.subscription.remove_topic(topic)
        self._node.presence.nudge()

    async def resume(self, cursor: str) -> list[Event]:
        """Start over from `cursor` on the same topics, for a transport whose client asks to
        resume without reconnecting (a WebSocket's `resume` message). Same contract as `open`."""
        self._leave()
        return await self.open(cursor)

    def close(self) -> None:
        """The connection is over: leave, and give back its stream slot."""
        self._leave()
        self._slot.release()

    def _leave(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
        if self.presence_id is not None:
            self._node.presence.disconnect(self.presence_id)
            self.presence_id = None
