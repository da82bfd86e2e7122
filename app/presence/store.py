"""Presence and typing: one interface, two backends (`MemoryPresenceStore`, `RedisPresenceStore`).

The store keeps, per discussion, the real-time *connections* in it (any transport, any process)
and who is *typing*. It decides which events a change causes; the caller (`PresenceTracker`)
publishes them as ephemeral (`durable=False`) events. Contract, identical for both backends
(tests/test_presence_store.py runs one suite against each):

- Per user and discussion, connections aggregate: `online` while any live connection of the user
  is online, `away` when all live ones are away (hidden), gone when none is left.
- `touch` adds connections or refreshes them (expiry = now + `ttl_ms`). A user's first
  connection yields `user_joined`; a status change of the aggregate yields `presence_changed`.
- `leave` debounces: if the user has another live connection there, the connection goes at once;
  if it was the user's last, it *lingers* for `grace_ms` (still counted, status unchanged), so a
  page reload, whose new connection arrives within the grace period, causes no leave/join flap.
- `sweep` removes expired entries (connections not refreshed within `ttl_ms`, e.g. a server
  killed with SIGKILL, or lingering ones past their grace) and typing past its expiry, and
  returns the events that causes. It is atomic: of several processes sweeping at once, exactly
  one gets each event.
- Typing is one entry per user and discussion, whatever the number of tabs. A broadcast
  (`typing_started`/`typing_stopped`) for a user and discussion happens at most once per
  `throttle_ms`: a signal inside the window changes state silently; a stop that the window holds
  back is emitted by `sweep` as soon as the window ends, so no client is left showing a stale
  indicator. Without a `typing=true` signal for `typing_ttl_ms`, typing ends (`sweep` emits
  `typing_stopped`). `stop_typing` (the user posted) ends it at once, outside the throttle:
  posting is not a typing signal and happens once per response.
- Every method takes `now_ms` for tests; `None` means the backend's clock (Redis: `TIME`, one
  clock for all processes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

Status = Literal["online", "away"]
STATUSES: frozenset[str] = frozenset(get_args(Status))

# Event types a store may return.
USER_JOINED = "user_joined"
USER_LEFT = "user_left"
PRESENCE_CHANGED = "presence_changed"
TYPING_STARTED = "typing_started"
TYPING_STOPPED = "typing_stopped"

# Bounds: a discussion holds at most this many connections (beyond it, new ones are not
# counted, the stream itself still works), and one sweep removes at most this many entries.
MAX_CONNECTIONS_PER_DISCUSSION = 100_000
SWEEP_BATCH = 1_000


@dataclass(frozen=True, slots=True)
class Connection:
    """One real-time connection in one discussion."""

    conn_id: str
    user_id: str
    name: str
    status: Status = "online"


@dataclass(frozen=True, slots=True)
class PresenceChange:
    """An event the change causes: `type` is one of the event types above. `status` is the
    user's aggregate status for presence events, None for typing events."""

    type: str
    user_id: str
    name: str
    status: str | None = None


@dataclass(frozen=True, slots=True)
class Participant:
    user_id: str
    name: str
    status: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    participants: list[Participant]
    typing: list[tuple[str, str]]  # (user id, name), announced typers only

    def as_json(self) -> dict[str, object]:
        return {
            "count": len(self.participants),
            "participants": [{"id": p.user_id, "name": p.name, "status": p.status} for p in self.participants],
            "typing": [{"id": user_id, "name": name} for user_id, name in self.typing],
        }


@dataclass(frozen=True, slots=True)
class PresenceTimings:
    """All durations in milliseconds."""

    ttl_ms: int = 45_000
    grace_ms: int = 5_000
    typing_ttl_ms: int = 5_000
    throttle_ms: int = 500
    # A connection whose user did nothing this long is closed (FR-035; see app.presence_tracker).
    idle_ms: int = 30 * 60_000

    def __post_init__(self) -> None:
        for name in ("ttl_ms", "grace_ms", "typing_ttl_ms", "throttle_ms", "idle_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


class PresenceStore(Protocol):
    timings: PresenceTimings

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def touch(
        self, discussion_id: str, connections: Sequence[Connection], *, now_ms: int | None = None
    ) -> list[PresenceChange]:
        """Add these connections, or refresh them if present. A lingering one stays lingering."""

    async def touch_many(
        self, by_discussion: Mapping[str, Sequence[Connection]], *, now_ms: int | None = None
    ) -> dict[str, list[PresenceChange]]:
        """`touch` of several discussions in one round trip (a batch of connects, a refresh)."""

    async def leave(self, discussion_id: str, conn_id: str, *, now_ms: int | None = None) -> list[PresenceChange]:
        """The connection closed: remove it, or let it linger if it was the user's last."""

    async def leave_many(
        self, discussion_id: str, conn_ids: Sequence[str], *, now_ms: int | None = None, grace_ms: int | None = None
    ) -> list[PresenceChange]:
        """`leave` for several connections of one discussion, in one call (shutdown, storms);
        `grace_ms` replaces the timings' grace for these (a server stopping for a restart)."""

    async def set_status(
        self, discussion_id: str, user_id: str, status: Status, *, conn_id: str | None = None, now_ms: int | None = None
    ) -> list[PresenceChange]:
        """Set one connection's status, or (conn_id None) every live connection of the user's."""

    async def user_discussions(self, user_id: str, *, now_ms: int | None = None) -> list[str]:
        """The discussions where the user has connections (for a per-user status change)."""

    async def typing(
        self, discussion_id: str, user_id: str, name: str, typing: bool, *, now_ms: int | None = None
    ) -> list[PresenceChange]: ...

    async def stop_typing(
        self, discussion_id: str, user_id: str, *, now_ms: int | None = None
    ) -> list[PresenceChange]: ...

    async def sweep(self, discussion_id: str, *, now_ms: int | None = None) -> list[PresenceChange]: ...

    async def sweep_many(
        self, discussion_ids: Sequence[str], *, now_ms: int | None = None, only_due: bool = True
    ) -> dict[str, list[PresenceChange]]:
        """`sweep` of several discussions in one round trip (a process sweeps all of its own).
        `only_due`: a store may skip discussions it knows have nothing due (Redis keeps each
        discussion's next deadline); False sweeps each (the tracker's periodic safety net)."""

    async def snapshot(self, discussion_id: str, *, now_ms: int | None = None) -> Snapshot: ...

    async def sweep_and_snapshot(
        self, discussion_id: str, *, now_ms: int | None = None
    ) -> tuple[list[PresenceChange], Snapshot]:
        """`sweep`, then `snapshot`, at the same moment: one round trip (a GET of a discussion)."""

    async def mark_active(self, user_id: str, *, now_ms: int | None = None) -> None:
        """Record user activity (typing, a presence signal, a post), for the idle timeout."""

    async def last_active_ms(self, user_id: str) -> int | None: ...


def aggregate(connections: int, live: int, online: int, previous: str) -> str:
    """A user's status from their connection counts. Only lingering ones: unchanged."""
    if connections == 0:
        return "offline"
    if live == 0:
        return previous
    return "online" if online > 0 else "away"
