"""Presence on Redis, shared by every process and server (contract: `app.presence.store`).

Layout (keys from `app.infra.redis_keys`): per discussion a sorted set of connections scored by their
expiry, a hash of who each connection is and its status, a hash of per-user counts, and a sorted
set + hash for typing. `lua/presence.lua` performs every change atomically and decides the
events it causes, so of several processes racing (two sweeps of the same expired entry), exactly
one emits. Each write PEXPIREs the discussion's keys past the newest entry's expiry: a server that
dies leaves entries that the next sweep (or read) removes, and keys that vanish on their own.
Times come from Redis `TIME` unless a test passes `now_ms`: one clock for all servers.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import redis.asyncio as redis

from app.infra.redis_connection import RedisConnection
from app.infra.redis_keys import RedisKeys
from app.presence.store import (
    MAX_CONNECTIONS_PER_DISCUSSION,
    SWEEP_BATCH,
    Connection,
    Participant,
    PresenceChange,
    PresenceTimings,
    Snapshot,
    Status,
)

_PRESENCE_LUA = resources.files("app").joinpath("lua/presence.lua").read_text()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _snapshot(people: list[Any], typers: list[Any]) -> Snapshot:
    p = [_text(v) for v in people]
    t = [_text(v) for v in typers]
    participants = [Participant(p[i], p[i + 1], p[i + 2]) for i in range(0, len(p), 3)]
    typing = [(t[i], t[i + 1]) for i in range(0, len(t), 2)]
    participants.sort(key=lambda x: (x.name, x.user_id))
    typing.sort(key=lambda x: (x[1], x[0]))
    return Snapshot(participants, typing)


def _changes(flat: list[Any]) -> list[PresenceChange]:
    items = [_text(v) for v in flat]
    return [PresenceChange(items[i], items[i + 1], items[i + 2], items[i + 3] or None) for i in range(0, len(items), 4)]


class RedisPresenceStore:
    def __init__(self, connection: RedisConnection, *, prefix: str, timings: PresenceTimings) -> None:
        self.timings = timings
        self._keys = RedisKeys(prefix)
        self._connection = connection
        # The process's shared pool (closed by its owner, not here).
        self._client: redis.Redis = connection.client
        self._script = self._client.register_script(_PRESENCE_LUA)
        t = timings
        # Keys outlive their newest entry, whichever kind it is.
        self._key_ttl_ms = 2 * max(t.ttl_ms, t.typing_ttl_ms) + t.grace_ms + t.throttle_ms

    async def open(self) -> None:
        await self._client.ping()

    async def close(self) -> None:
        return None  # the connection is shared: its owner closes it

    async def _run(
        self,
        op: str,
        discussion_id: str,
        args: Sequence[str | int],
        now_ms: int | None,
        extra_keys: Sequence[str] = (),
        grace_ms: int | None = None,
        pipe: redis.client.Pipeline | None = None,
    ) -> Any:
        """Run one op of presence.lua on one discussion (queued on `pipe` if given)."""
        t = self.timings
        return await self._script(
            keys=[*self._keys.presence(discussion_id), *extra_keys],
            args=[
                op,
                "" if now_ms is None else now_ms,
                t.ttl_ms,
                t.grace_ms if grace_ms is None else grace_ms,
                t.typing_ttl_ms,
                t.throttle_ms,
                self._key_ttl_ms,
                MAX_CONNECTIONS_PER_DISCUSSION,
                *args,
            ],
            client=pipe,
        )

    async def touch(
        self, discussion_id: str, connections: Sequence[Connection], *, now_ms: int | None = None
    ) -> list[PresenceChange]:
        if not connections:
            return []
        return _changes(await self._touch(discussion_id, connections, now_ms))

    async def touch_many(
        self, by_discussion: Mapping[str, Sequence[Connection]], *, now_ms: int | None = None
    ) -> dict[str, list[PresenceChange]]:
        touched = [(d, connections) for d, connections in by_discussion.items() if connections]
        if not touched:
            return {d: [] for d in by_discussion}
        async with self._client.pipeline(transaction=False) as pipe:
            for discussion_id, connections in touched:
                await self._touch(discussion_id, connections, now_ms, pipe)
            results = await pipe.execute()
        changes = {d: _changes(result) for (d, _), result in zip(touched, results, strict=True)}
        return {d: changes.get(d, []) for d in by_discussion}

    async def _touch(
        self,
        discussion_id: str,
        connections: Sequence[Connection],
        now_ms: int | None,
        pipe: redis.client.Pipeline | None = None,
    ) -> Any:
        args: list[str | int] = [discussion_id]
        for c in connections:
            args += [c.conn_id, c.user_id, c.name, c.status]
        index_keys = [self._keys.presence_user(c.user_id) for c in connections]
        return await self._run("touch", discussion_id, args, now_ms, index_keys, pipe=pipe)

    async def leave(self, discussion_id: str, conn_id: str, *, now_ms: int | None = None) -> list[PresenceChange]:
        return await self.leave_many(discussion_id, [conn_id], now_ms=now_ms)

    async def leave_many(
        self, discussion_id: str, conn_ids: Sequence[str], *, now_ms: int | None = None, grace_ms: int | None = None
    ) -> list[PresenceChange]:
        if not conn_ids:
            return []
        return _changes(await self._run("leave", discussion_id, list(conn_ids), now_ms, grace_ms=grace_ms))

    async def set_status(
        self, discussion_id: str, user_id: str, status: Status, *, conn_id: str | None = None, now_ms: int | None = None
    ) -> list[PresenceChange]:
        return _changes(await self._run("status", discussion_id, [user_id, status, conn_id or ""], now_ms))

    async def user_discussions(self, user_id: str, *, now_ms: int | None = None) -> list[str]:
        if now_ms is None:
            now_ms = await self._connection.server_time_ms()
        found: list[bytes] = await self._client.zrangebyscore(  # type: ignore[assignment]
            self._keys.presence_user(user_id), f"({now_ms}", "+inf"
        )
        return [_text(d) for d in found]

    async def typing(
        self, discussion_id: str, user_id: str, name: str, typing: bool, *, now_ms: int | None = None
    ) -> list[PresenceChange]:
        return _changes(await self._run("typing", discussion_id, [user_id, name, "1" if typing else "0"], now_ms))

    async def stop_typing(self, discussion_id: str, user_id: str, *, now_ms: int | None = None) -> list[PresenceChange]:
        return _changes(await self._run("stop_typing", discussion_id, [user_id], now_ms))

    async def sweep(self, discussion_id: str, *, now_ms: int | None = None) -> list[PresenceChange]:
        return _changes(await self._run("sweep", discussion_id, [SWEEP_BATCH], now_ms))

    async def sweep_many(
        self, discussion_ids: Sequence[str], *, now_ms: int | None = None, only_due: bool = True
    ) -> dict[str, list[PresenceChange]]:
        swept: dict[str, list[PresenceChange]] = {d: [] for d in discussion_ids}
        due = await self._due(discussion_ids, now_ms) if only_due and discussion_ids else list(discussion_ids)
        if not due:
            return swept
        async with self._client.pipeline(transaction=False) as pipe:
            for discussion_id in due:
                await self._run("sweep", discussion_id, [SWEEP_BATCH], now_ms, pipe=pipe)
            results = await pipe.execute()
        swept |= {d: _changes(result) for d, result in zip(due, results, strict=True)}
        return swept

    async def _due(self, discussion_ids: Sequence[str], now_ms: int | None) -> list[str]:
        """Which of these have something to sweep (presence.lua keeps each discussion's next
        deadline in one zset): one round trip instead of a script call per discussion, most
        of which would find nothing (at 1,000 discussions, a sweep a second was an eighth of
        the event loop in `bench.run seed`)."""
        due_key = self._keys.presence_due
        names = [self._keys.presence_conns(d) for d in discussion_ids]
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.zmscore(due_key, names)
            # Bounded: entries of discussions whose keys expired unswept (nobody watched them).
            pipe.zremrangebyscore(due_key, "-inf", int(time.time() * 1000) - 2 * self._key_ttl_ms)
            (seconds, micros), scores, _ = await pipe.execute()
        now = now_ms if now_ms is not None else int(seconds) * 1000 + int(micros) // 1000
        return [d for d, score in zip(discussion_ids, scores, strict=True) if score is not None and score <= now]

    async def snapshot(self, discussion_id: str, *, now_ms: int | None = None) -> Snapshot:
        people, typers = await self._run("snapshot", discussion_id, [], now_ms)
        return _snapshot(people, typers)

    async def sweep_and_snapshot(
        self, discussion_id: str, *, now_ms: int | None = None
    ) -> tuple[list[PresenceChange], Snapshot]:
        changes, people, typers = await self._run("sweep_snapshot", discussion_id, [SWEEP_BATCH], now_ms)
        return _changes(changes), _snapshot(people, typers)

    async def mark_active(self, user_id: str, *, now_ms: int | None = None) -> None:
        if now_ms is None:
            now_ms = await self._connection.server_time_ms()
        await self._client.set(self._keys.presence_active(user_id), now_ms, px=self.timings.idle_ms)

    async def last_active_ms(self, user_id: str) -> int | None:
        value = await self._client.get(self._keys.presence_active(user_id))
        return None if value is None else int(value)
