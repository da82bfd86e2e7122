"""Presence inside this one process, for running without Redis (contract: `app.presence.store`).

The same state machine as `lua/presence.lua`, on dicts. Bounded like the Redis layout: entries
expire (the sweep removes them), a discussion holds at most MAX_CONNECTIONS_PER_DISCUSSION
connections, and a discussion with nothing left is forgotten. The tracker sweeps only the
discussions someone streams here; past MAX_DISCUSSIONS, the rest are purged of expired entries
without events (in one process, a discussion nobody streams has nobody to tell).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from app.presence.store import (
    MAX_CONNECTIONS_PER_DISCUSSION,
    PRESENCE_CHANGED,
    SWEEP_BATCH,
    TYPING_STARTED,
    TYPING_STOPPED,
    USER_JOINED,
    USER_LEFT,
    Connection,
    Participant,
    PresenceChange,
    PresenceTimings,
    Snapshot,
    Status,
    aggregate,
)


@dataclass
class _Conn:
    user_id: str
    status: str
    expires_ms: int
    lingering: bool = False


@dataclass
class _User:
    name: str
    connections: int = 0
    live: int = 0
    online: int = 0
    status: str = "online"


@dataclass
class _Typing:
    name: str
    state: str  # T, U, S, C: as in lua/presence.lua
    due_ms: int
    broadcast_ms: int
    signal_ms: int = 0


@dataclass
class _Discussion:
    conns: dict[str, _Conn] = field(default_factory=dict)
    users: dict[str, _User] = field(default_factory=dict)
    typing: dict[str, _Typing] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.conns or self.users or self.typing)


MAX_DISCUSSIONS = 10_000
MAX_USERS = 100_000


def _clock_ms() -> int:
    return time.time_ns() // 1_000_000


class MemoryPresenceStore:
    def __init__(self, timings: PresenceTimings) -> None:
        self.timings = timings
        self._discussions: dict[str, _Discussion] = {}
        self._user_index: dict[str, dict[str, int]] = {}
        self._active: dict[str, int] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._discussions.clear()

    def _get(self, discussion_id: str) -> _Discussion:
        if discussion_id not in self._discussions and len(self._discussions) >= MAX_DISCUSSIONS:
            self._purge(_clock_ms())
        return self._discussions.setdefault(discussion_id, _Discussion())

    def _purge(self, now: int) -> None:
        for discussion_id in list(self._discussions):
            self._sweep_now(discussion_id, now)
        for user_id in list(self._user_index):
            index = {d: expires for d, expires in self._user_index[user_id].items() if expires > now}
            if index:
                self._user_index[user_id] = index
            else:
                del self._user_index[user_id]

    def _done(self, discussion_id: str, d: _Discussion) -> None:
        if d.empty:
            self._discussions.pop(discussion_id, None)

    def _settle(self, d: _Discussion, user_id: str, u: _User, was_present: bool, out: list[PresenceChange]) -> None:
        status = aggregate(u.connections, u.live, u.online, u.status)
        if u.connections <= 0:
            if was_present:
                out.append(PresenceChange(USER_LEFT, user_id, u.name, "offline"))
            d.users.pop(user_id, None)
            return
        if not was_present:
            out.append(PresenceChange(USER_JOINED, user_id, u.name, status))
        elif status != u.status:
            out.append(PresenceChange(PRESENCE_CHANGED, user_id, u.name, status))
        u.status = status
        d.users[user_id] = u

    async def touch(
        self, discussion_id: str, connections: Sequence[Connection], *, now_ms: int | None = None
    ) -> list[PresenceChange]:
        now = _clock_ms() if now_ms is None else now_ms
        t = self.timings
        d = self._get(discussion_id)
        out: list[PresenceChange] = []
        for c in connections:
            existing = d.conns.get(c.conn_id)
            if existing is not None:
                if not existing.lingering:
                    existing.expires_ms = now + t.ttl_ms
            elif len(d.conns) < MAX_CONNECTIONS_PER_DISCUSSION:
                u = d.users.get(c.user_id)
                was_present = u is not None
                if u is None:
                    u = _User(c.name, status=c.status)
                u.name = c.name
                u.connections += 1
                u.live += 1
                u.online += c.status == "online"
                d.conns[c.conn_id] = _Conn(c.user_id, c.status, now + t.ttl_ms)
                self._settle(d, c.user_id, u, was_present, out)
            if c.user_id not in self._user_index and len(self._user_index) >= MAX_USERS:
                self._purge(now)
            index = self._user_index.setdefault(c.user_id, {})
            index[discussion_id] = now + t.ttl_ms + t.grace_ms
            for other, expires in list(index.items()):
                if expires <= now:
                    del index[other]
        self._done(discussion_id, d)
        return out

    async def leave(self, discussion_id: str, conn_id: str, *, now_ms: int | None = None) -> list[PresenceChange]:
        return await self.leave_many(discussion_id, [conn_id], now_ms=now_ms)

    async def leave_many(
        self, discussion_id: str, conn_ids: Sequence[str], *, now_ms: int | None = None, grace_ms: int | None = None
    ) -> list[PresenceChange]:
        now = _clock_ms() if now_ms is None else now_ms
        linger_until = now + (self.timings.grace_ms if grace_ms is None else grace_ms)
        d = self._get(discussion_id)
        out: list[PresenceChange] = []
        for conn_id in conn_ids:
            self._leave_one(d, conn_id, linger_until, out)
        self._done(discussion_id, d)
        return out

    def _leave_one(self, d: _Discussion, conn_id: str, linger_until: int, out: list[PresenceChange]) -> None:
        conn = d.conns.get(conn_id)
        if conn is not None and not conn.lingering:
            u = d.users.get(conn.user_id)
            if u is None:
                del d.conns[conn_id]
            else:
                u.live -= 1
                u.online -= conn.status == "online"
                if u.live > 0:
                    u.connections -= 1
                    del d.conns[conn_id]
                else:
                    # The user's last live connection lingers, so a reload does not flap.
                    conn.lingering = True
                    conn.expires_ms = linger_until
                self._settle(d, conn.user_id, u, True, out)

    async def set_status(
        self, discussion_id: str, user_id: str, status: Status, *, conn_id: str | None = None, now_ms: int | None = None
    ) -> list[PresenceChange]:
        d = self._get(discussion_id)
        out: list[PresenceChange] = []
        u = d.users.get(user_id)
        if u is not None:
            ids = [conn_id] if conn_id is not None else [k for k, c in d.conns.items() if c.user_id == user_id]
            for key in ids:
                conn = d.conns.get(key)
                if conn is not None and conn.user_id == user_id and not conn.lingering and conn.status != status:
                    u.online += 1 if status == "online" else -1
                    conn.status = status
            self._settle(d, user_id, u, True, out)
        self._done(discussion_id, d)
        return out

    async def user_discussions(self, user_id: str, *, now_ms: int | None = None) -> list[str]:
        now = _clock_ms() if now_ms is None else now_ms
        return [d for d, expires in self._user_index.get(user_id, {}).items() if expires > now]

    def _stopped(self, d: _Discussion, user_id: str, e: _Typing, now: int, out: list[PresenceChange]) -> None:
        out.append(PresenceChange(TYPING_STOPPED, user_id, e.name))
        d.typing[user_id] = _Typing(e.name, "C", now + self.timings.throttle_ms, now)

    def _drop_unannounced(self, d: _Discussion, user_id: str, e: _Typing, now: int) -> None:
        throttle = self.timings.throttle_ms
        if now - e.broadcast_ms < throttle:
            d.typing[user_id] = _Typing(e.name, "C", e.broadcast_ms + throttle, e.broadcast_ms)
        else:
            del d.typing[user_id]

    async def typing(
        self, discussion_id: str, user_id: str, name: str, typing: bool, *, now_ms: int | None = None
    ) -> list[PresenceChange]:
        now = _clock_ms() if now_ms is None else now_ms
        t = self.timings
        d = self._get(discussion_id)
        out: list[PresenceChange] = []
        e = d.typing.get(user_id)
        if typing:
            if e is not None and e.state in ("T", "S"):
                d.typing[user_id] = _Typing(name, "T", now + t.typing_ttl_ms, e.broadcast_ms)
            elif e is None or now - e.broadcast_ms >= t.throttle_ms:
                out.append(PresenceChange(TYPING_STARTED, user_id, name))
                d.typing[user_id] = _Typing(name, "T", now + t.typing_ttl_ms, now)
            else:
                d.typing[user_id] = _Typing(name, "U", e.broadcast_ms + t.throttle_ms, e.broadcast_ms, now)
        elif e is not None and e.state == "T":
            if now - e.broadcast_ms >= t.throttle_ms:
                self._stopped(d, user_id, e, now, out)
            else:
                d.typing[user_id] = _Typing(e.name, "S", e.broadcast_ms + t.throttle_ms, e.broadcast_ms)
        elif e is not None and e.state == "U":
            self._drop_unannounced(d, user_id, e, now)
        self._done(discussion_id, d)
        return out

    async def stop_typing(self, discussion_id: str, user_id: str, *, now_ms: int | None = None) -> list[PresenceChange]:
        now = _clock_ms() if now_ms is None else now_ms
        d = self._get(discussion_id)
        out: list[PresenceChange] = []
        e = d.typing.get(user_id)
        if e is not None and e.state in ("T", "S"):
            self._stopped(d, user_id, e, now, out)
        elif e is not None and e.state == "U":
            self._drop_unannounced(d, user_id, e, now)
        self._done(discussion_id, d)
        return out

    async def sweep(self, discussion_id: str, *, now_ms: int | None = None) -> list[PresenceChange]:
        return self._sweep_now(discussion_id, _clock_ms() if now_ms is None else now_ms)

    async def touch_many(
        self, by_discussion: Mapping[str, Sequence[Connection]], *, now_ms: int | None = None
    ) -> dict[str, list[PresenceChange]]:
        now = _clock_ms() if now_ms is None else now_ms
        return {d: await self.touch(d, connections, now_ms=now) for d, connections in by_discussion.items()}

    async def sweep_many(
        self, discussion_ids: Sequence[str], *, now_ms: int | None = None, only_due: bool = True
    ) -> dict[str, list[PresenceChange]]:
        now = _clock_ms() if now_ms is None else now_ms
        return {discussion_id: self._sweep_now(discussion_id, now) for discussion_id in discussion_ids}

    def _sweep_now(self, discussion_id: str, now: int) -> list[PresenceChange]:
        d = self._discussions.get(discussion_id)
        if d is None:
            return []
        out: list[PresenceChange] = []
        expired = sorted((c.expires_ms, k) for k, c in d.conns.items() if c.expires_ms <= now)[:SWEEP_BATCH]
        touched: dict[str, _User | None] = {}
        for _, key in expired:
            conn = d.conns.pop(key)
            if conn.user_id not in touched:
                touched[conn.user_id] = d.users.get(conn.user_id)
            u = touched[conn.user_id]
            if u is not None:
                u.connections -= 1
                if not conn.lingering:
                    u.live -= 1
                    u.online -= conn.status == "online"
        for user_id, u in touched.items():
            if u is not None:
                self._settle(d, user_id, u, True, out)
        due = sorted((e.due_ms, k) for k, e in d.typing.items() if e.due_ms <= now)[:SWEEP_BATCH]
        for _, user_id in due:
            e = d.typing[user_id]
            if e.state in ("T", "S"):
                self._stopped(d, user_id, e, now, out)
            elif e.state == "U" and now < e.signal_ms + self.timings.typing_ttl_ms:
                out.append(PresenceChange(TYPING_STARTED, user_id, e.name))
                d.typing[user_id] = _Typing(e.name, "T", e.signal_ms + self.timings.typing_ttl_ms, now)
            else:
                del d.typing[user_id]
        self._done(discussion_id, d)
        return out

    async def snapshot(self, discussion_id: str, *, now_ms: int | None = None) -> Snapshot:
        now = _clock_ms() if now_ms is None else now_ms
        d = self._discussions.get(discussion_id) or _Discussion()
        participants = [
            Participant(user_id, u.name, aggregate(u.connections, u.live, u.online, u.status))
            for user_id, u in d.users.items()
            if u.connections > 0
        ]
        typing = [(user_id, e.name) for user_id, e in d.typing.items() if e.state == "T" and e.due_ms > now]
        participants.sort(key=lambda x: (x.name, x.user_id))
        typing.sort(key=lambda x: (x[1], x[0]))
        return Snapshot(participants, typing)

    async def sweep_and_snapshot(
        self, discussion_id: str, *, now_ms: int | None = None
    ) -> tuple[list[PresenceChange], Snapshot]:
        now = _clock_ms() if now_ms is None else now_ms
        return self._sweep_now(discussion_id, now), await self.snapshot(discussion_id, now_ms=now)

    async def mark_active(self, user_id: str, *, now_ms: int | None = None) -> None:
        now = _clock_ms() if now_ms is None else now_ms
        self._active[user_id] = now
        # Bounded: forget users whose activity is older than the idle timeout.
        if len(self._active) > MAX_USERS:
            floor = now - self.timings.idle_ms
            self._active = {k: v for k, v in self._active.items() if v > floor}

    async def last_active_ms(self, user_id: str) -> int | None:
        return self._active.get(user_id)
