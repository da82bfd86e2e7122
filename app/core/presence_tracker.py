"""This process's side of presence: its connections in the `PresenceStore`, and the events.

- Every real-time connection (any transport) registers through `StreamSession.open` and leaves
  through `StreamSession.close`: one presence connection per session and discussion. Leaving is
  synchronous for the session (close runs in `finally`), so it is queued (bounded) and done by
  the tracker's one background task; if the queue is full the entry simply expires (TTL).
- That same task, every `ttl/3`, refreshes all of this process's connections in one store call
  per discussion (no task per connection) and reconciles sessions whose discussions changed
  (a WebSocket's subscribe/unsubscribe: call `nudge()` to do it at once). Every
  `sweep_interval_s` it sweeps the discussions this process has subscribers for (the hub knows
  them): expired connections become `user_left`, expired typing `typing_stopped`. The store's
  sweep is atomic, so with many processes each event is emitted once.
- Status semantics: a connection has a status (`StreamSession.set_status`, a WebSocket's
  `presence` message); `PUT /api/presence` is per *user*: it sets every connection of the
  caller's, on every server, in every discussion (a REST call cannot name an SSE connection).
- Active users (FR-009): `online_users()` are the users holding at least one connection here
  whose status is online; a user whose every connection is away (every tab hidden) is not
  active, so their notifications go out as Web Push too (app/core/active_users.py).
- Idle (FR-035): a stream only receives, so reading is not activity. A connection is idle when
  neither it nor its user (on any process) did anything for `idle_ms`: opening it, a typing
  signal, a status signal, a post, or `PUT /api/presence`. The tracker tells an idle session
  (`went_idle`); the session ends with one `session_idle` event (`StreamSession.due`). The
  page reconnects when its user is back (static/presence.js).
- The tracker never writes into a session: it reads `identity`, `discussion_ids`, `status`,
  and tells it of a status change (`apply_status`) or of idleness (`went_idle`).
All events go out with `durable=False`: live readers on every process get them; never replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.auth import Identity
from app.cancellation import raise_if_cancelling, stop_if_cancelled
from app.core.hub import Hub
from app.core.presence_session import OnlineCount, PresenceSession
from app.core.publication import Publication
from app.core.room_budget import ROOM_EVENTS, RoomEventBudget
from app.infra.batching import GroupCommit
from app.log import topics
from app.log.events import Event
from app.presence.store import Connection, PresenceChange, PresenceStore, PresenceTimings, Snapshot, Status

log = logging.getLogger(__name__)

# Leaves waiting for the background task; overflow policy: drop the leave (the entry expires).
MAX_PENDING_LEAVES = 10_000
MAX_BACKOFF_S = 5.0
# Discussions swept per round trip (`sweep_many`): a process reading 1,000 discussions sweeps
# them all every second: one call each was 1,000 round trips a second.
SWEEP_CHUNK = 200
# Discussions per touch round trip: a refresh of 10,000 connections over 1,000 discussions in
# chunks of 200 held the loop ~5-10 ms a chunk (the commands' arguments packed at once).
TOUCH_CHUNK = 50
FULL_SWEEP_EVERY = 30
# Connections per `leave_many` call (bounds one Lua call's work).
LEAVE_BATCH = 500
# How long the users of a stopping server stay present (lingering): long enough for its clients
# to reconnect to the restarted server or another one, so a deploy does not make a whole
# discussion leave and join again (bench/: herd). Users who do not come back go after it.
SHUTDOWN_GRACE_MS = 30_000
DISCUSSION_TOPIC_PREFIX = topics.discussion("")

PublishMany = Callable[[Sequence[Publication]], Awaitable[list[Event]]]


@dataclass(eq=False)
class _Registration:
    session: PresenceSession
    registered: set[str] = field(default_factory=set)
    last_active_ms: int = 0
    idle: bool = False


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class PresenceTracker:
    def __init__(self, store: PresenceStore, hub: Hub, *, sweep_interval_s: float) -> None:
        self.store = store
        self.timings: PresenceTimings = store.timings
        self._hub = hub
        self._sweep_interval_s = sweep_interval_s
        self._refresh_interval_s = self.timings.ttl_ms / 3000
        self._registrations: dict[str, _Registration] = {}
        self._leaves: asyncio.Queue[tuple[str, str]] = asyncio.Queue(MAX_PENDING_LEAVES)
        self._wake = asyncio.Event()
        # A session's discussions changed (`nudge`): reconcile at the next wake. Not on every
        # wake: a leave wakes the loop too, and a reconcile walks every connection.
        self._reconcile_due = False
        self._sweeps = 0
        self._publish: PublishMany | None = None
        self._room_budget = RoomEventBudget()
        self._joins: GroupCommit[str, None] = GroupCommit(self._join_batch)
        self._leave_grace_ms: int | None = None  # None: the timings' grace
        self._online = OnlineCount()  # FR-009
        self._ids = itertools.count()
        self._id_prefix = secrets.token_hex(4)  # connection ids are unique across processes

    def attach(self, publish: PublishMany) -> None:
        """How events go out (`Node.publish_many`); set once by the composition root."""
        self._publish = publish

    @property
    def connection_count(self) -> int:
        return len(self._registrations)

    def online_users(self) -> set[str]:
        """Users with at least one connection to this process whose status is online."""
        return self._online.users()

    def is_online_here(self, user_id: str) -> bool:
        return user_id in self._online

    async def _emit(self, discussion_id: str, changes: Sequence[PresenceChange]) -> None:
        await self._emit_all({discussion_id: changes})

    async def _emit_all(self, changes_by_discussion: Mapping[str, Sequence[PresenceChange]]) -> None:
        """Every discussion's changes in one append (a crowd's joins are one log call, not one
        each), less what the discussion's `RoomEventBudget` skips."""
        if self._publish is None:
            raise RuntimeError("PresenceTracker.attach() was not called")
        publications = []
        for discussion_id, changes in changes_by_discussion.items():
            topic = topics.discussion(discussion_id)
            for change in changes:
                if change.type in ROOM_EVENTS and not self._room_budget.take(
                    discussion_id, self._hub.subscriber_count(topic)
                ):
                    continue  # a crowd is arriving or leaving: see RoomEventBudget
                payload: dict[str, Any] = {} if change.status is None else {"status": change.status}
                user = {"id": change.user_id, "name": change.name}
                publications.append(Publication(topic, change.type, discussion_id, user, payload, durable=False))
        if publications:
            await self._publish(publications)

    # -- connections ------------------------------------------------------------------------

    async def connect(self, session: PresenceSession) -> str:
        """Register a newly opened session in each of its discussions; returns its id."""
        conn_id = f"{self._id_prefix}{next(self._ids):x}"
        self._registrations[conn_id] = _Registration(session, last_active_ms=_now_ms())
        self._online.add(session)
        try:
            await self._joins.submit(conn_id)
        except Exception:
            # Presence is best effort: the stream works without it, and the next refresh retries.
            log.exception("presence: could not register a connection; retrying at the next refresh")
        return conn_id

    async def _join_batch(self, conn_ids: Sequence[str]) -> list[None]:
        """Connections that opened together join in one store call per discussion: a crowd
        reconnecting after a restart costs O(discussions) calls, not O(connections)."""
        by_discussion: dict[str, list[Connection]] = {}
        for index, conn_id in enumerate(conn_ids):
            await _yield_every(index)
            registration = self._registrations.get(conn_id)
            if registration is None:
                continue  # closed while waiting for its batch
            session = registration.session
            for discussion_id in session.discussion_ids:
                if discussion_id not in registration.registered:
                    registration.registered.add(discussion_id)
                    by_discussion.setdefault(discussion_id, []).append(self._connection(conn_id, session))
        await self._touch(by_discussion)
        return [None] * len(conn_ids)

    def disconnect(self, conn_id: str) -> None:
        """The session closed (synchronous: called from `finally`). Idempotent."""
        registration = self._registrations.pop(conn_id, None)
        if registration is None:
            return
        self._online.remove(registration.session)
        for discussion_id in registration.registered:
            try:
                self._leaves.put_nowait((discussion_id, conn_id))
            except asyncio.QueueFull:
                log.warning("presence leave queue full; the connection will expire instead")
        self._wake.set()

    def nudge(self) -> None:
        """A session's discussions changed: reconcile now rather than at the next refresh."""
        self._reconcile_due = True
        self._wake.set()

    async def _reconcile(self) -> None:
        """Sessions whose discussions changed (a WebSocket's subscribe/unsubscribe): leave the
        ones they dropped, and join the new ones the way connects join (`_join_batch`)."""
        self._reconcile_due = False
        for index, (conn_id, registration) in enumerate(list(self._registrations.items())):
            await _yield_every(index)
            for discussion_id in sorted(registration.registered - set(registration.session.discussion_ids)):
                registration.registered.discard(discussion_id)
                await self._emit(discussion_id, await self.store.leave(discussion_id, conn_id))
        await self._join_batch(list(self._registrations))

    @staticmethod
    def _connection(conn_id: str, session: PresenceSession) -> Connection:
        identity = session.identity
        return Connection(conn_id, identity.user_id, identity.name, session.status)

    async def set_status(self, conn_id: str, status: Status) -> None:
        """One connection's status (a WebSocket's `presence` message)."""
        registration = self._registrations.get(conn_id)
        if registration is None:
            return
        self._online.set_status(registration.session, status)
        user_id = registration.session.identity.user_id
        if status == "online":
            registration.last_active_ms = _now_ms()
            await self.store.mark_active(user_id)
        for discussion_id in sorted(registration.registered):
            changes = await self.store.set_status(discussion_id, user_id, status, conn_id=conn_id)
            await self._emit(discussion_id, changes)

    async def set_user_status(self, identity: Identity, status: Status) -> None:
        """Every connection of the user's, on every server (`PUT /api/presence`)."""
        for registration in self._registrations.values():
            if registration.session.identity.user_id == identity.user_id:
                self._online.set_status(registration.session, status)
        await self.store.mark_active(identity.user_id)
        for discussion_id in await self.store.user_discussions(identity.user_id):
            await self._emit(discussion_id, await self.store.set_status(discussion_id, identity.user_id, status))

    # -- typing -----------------------------------------------------------------------------

    async def typing(self, discussion_id: str, identity: Identity, typing: bool) -> None:
        """A typing signal (read access is the caller's to check). Throttled, never an error."""
        await self.store.mark_active(identity.user_id)
        changes = await self.store.typing(discussion_id, identity.user_id, identity.name, typing)
        await self._emit(discussion_id, changes)

    async def stop_typing(self, discussion_id: str, identity: Identity) -> None:
        """The user posted: their typing ends at once."""
        await self.store.mark_active(identity.user_id)
        await self._emit(discussion_id, await self.store.stop_typing(discussion_id, identity.user_id))

    # -- reading ----------------------------------------------------------------------------

    async def snapshot(self, discussion_id: str) -> Snapshot:
        """Who is here and who is typing; sweeps first, so nothing expired is shown."""
        changes, here = await self.store.sweep_and_snapshot(discussion_id)
        await self._emit(discussion_id, changes)
        return here

    # -- idle (FR-035) ----------------------------------------------------------------------

    async def _check_idle(self, now_ms: int) -> None:
        idle_ms = self.timings.idle_ms
        for index, registration in enumerate(list(self._registrations.values())):
            await _yield_every(index)
            if registration.idle or now_ms - registration.last_active_ms < idle_ms:
                continue
            # Activity through REST may have happened on any process: ask the store.
            user_id = registration.session.identity.user_id
            last = await self.store.last_active_ms(user_id)
            if last is not None and last > registration.last_active_ms:
                registration.last_active_ms = last
            if now_ms - registration.last_active_ms >= idle_ms:
                registration.idle = True
                registration.session.went_idle()

    # -- the background task ----------------------------------------------------------------

    def _local_discussions(self) -> list[str]:
        return [
            name[len(DISCUSSION_TOPIC_PREFIX) :]
            for name in self._hub.subscribed_topics()
            if name.startswith(DISCUSSION_TOPIC_PREFIX)
        ]

    async def _drain_leaves(self) -> None:
        """Queued leaves, one store call per discussion (a shutdown leaves every connection)."""
        while not self._leaves.empty():
            by_discussion: dict[str, list[str]] = {}
            while not self._leaves.empty():
                discussion_id, conn_id = self._leaves.get_nowait()
                by_discussion.setdefault(discussion_id, []).append(conn_id)
            for discussion_id, conn_ids in by_discussion.items():
                for start in range(0, len(conn_ids), LEAVE_BATCH):
                    batch = conn_ids[start : start + LEAVE_BATCH]
                    changes = await self.store.leave_many(discussion_id, batch, grace_ms=self._leave_grace_ms)
                    await self._emit(discussion_id, changes)

    async def _refresh(self) -> None:
        await self._reconcile()
        by_discussion: dict[str, list[Connection]] = {}
        for index, (conn_id, registration) in enumerate(list(self._registrations.items())):
            await _yield_every(index)
            for discussion_id in registration.registered:
                by_discussion.setdefault(discussion_id, []).append(self._connection(conn_id, registration.session))
        await self._touch(by_discussion)

    async def _touch(self, by_discussion: dict[str, list[Connection]]) -> None:
        """One store round trip and one append per `TOUCH_CHUNK` discussions, not a call per
        connection or discussion. A connection closed meanwhile is left out: its leave
        is queued, and a touch after it would keep it listed until it expired."""
        live = {
            discussion_id: [connection for connection in connections if connection.conn_id in self._registrations]
            for discussion_id, connections in by_discussion.items()
        }
        items = [(discussion_id, connections) for discussion_id, connections in live.items() if connections]
        for start in range(0, len(items), TOUCH_CHUNK):  # a refresh: a round trip per chunk
            await self._emit_all(await self.store.touch_many(dict(items[start : start + TOUCH_CHUNK])))

    async def _sweep(self) -> None:
        local = self._local_discussions()
        # Each sweep looks only at what the store says is due; every FULL_SWEEP_EVERY-th looks at
        # everything, in case a deadline was not recorded (keys written by an older version).
        self._sweeps += 1
        full = self._sweeps % FULL_SWEEP_EVERY == 0
        for start in range(0, len(local), SWEEP_CHUNK):
            swept = await self.store.sweep_many(local[start : start + SWEEP_CHUNK], only_due=not full)
            for discussion_id, changes in swept.items():
                await self._emit(discussion_id, changes)

    async def run(self) -> None:
        """Leaves, refreshes, sweeps and idle checks. Owned by the app; cancelled on shutdown."""
        loop = asyncio.get_running_loop()
        next_refresh = loop.time() + self._refresh_interval_s
        next_sweep = loop.time() + self._sweep_interval_s
        backoff_s = 0.1
        while True:
            raise_if_cancelling()
            # Cleared before the work, so a wake-up arriving during it is not lost.
            self._wake.clear()
            try:
                await self._drain_leaves()
                now = loop.time()
                if now >= next_refresh:
                    next_refresh = now + self._refresh_interval_s
                    await self._refresh()
                    await self._check_idle(_now_ms())
                elif self._reconcile_due:
                    await self._reconcile()
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + self._sweep_interval_s
                    await self._sweep()
                backoff_s = 0.1
            except Exception as error:
                stop_if_cancelled(error)
                # Log, back off, go on: presence must never take the process down.
                log.exception("presence: background pass failed; retrying in %.1fs", backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, MAX_BACKOFF_S)
                continue
            timeout = max(0.0, min(next_refresh, next_sweep) - loop.time())
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for swallows a cancellation
            # that arrives as the awaited thing completes, and a shutdown (which closes streams,
            # setting _wake, while cancelling this task) then waited for ever (bench/: herd).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    def stopping(self) -> None:
        """The server is stopping: its connections about to close linger for SHUTDOWN_GRACE_MS."""
        self._leave_grace_ms = max(self.timings.grace_ms, SHUTDOWN_GRACE_MS)

    async def drain(self, timeout_s: float) -> None:
        """On shutdown: send the leaves still queued, so users go at once, not at expiry."""
        await self._joins.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._drain_leaves(), timeout_s)


async def _yield_every(index: int, every: int = 200) -> None:
    """Let the loop deliver between slices of a pass over every connection: at 10,000
    connections a pass in one piece stopped every delivery behind it for tens of ms."""
    if index and index % every == 0:
        await asyncio.sleep(0)
