"""One presence contract, both backends: in-process and Redis (a real redis-server).

Times are passed explicitly (`now_ms`), so throttling and expiry are checked exactly, with no
sleeping and no dependence on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import pytest

from app.infra.redis_connection import RedisConnection
from app.infra.redis_keys import RedisKeys
from app.presence.store import Connection, PresenceChange, PresenceStore, PresenceTimings
from app.presence.store_memory import MemoryPresenceStore
from app.presence.store_redis import RedisPresenceStore

TIMINGS = PresenceTimings(ttl_ms=10_000, grace_ms=2_000, typing_ttl_ms=5_000, throttle_ms=500)
D = "disc"


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[PresenceStore]:
    made: PresenceStore
    if request.param == "memory":
        made = MemoryPresenceStore(TIMINGS)
    else:
        url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
        connection = RedisConnection(url)
        made = RedisPresenceStore(connection, prefix=prefix, timings=TIMINGS)
    await made.open()
    yield made
    await made.close()
    if request.param == "redis":
        await connection.close()


@pytest.fixture
def t0() -> int:
    # Near the real clock, so Redis's own expiries (PEXPIRE) agree with the explicit times.
    return time.time_ns() // 1_000_000


def kinds(changes: list[PresenceChange]) -> list[tuple[str, str, str | None]]:
    return [(c.type, c.user_id, c.status) for c in changes]


def conn(conn_id: str, user: str, status: str = "online") -> Connection:
    return Connection(conn_id, user, user.title(), status)  # type: ignore[arg-type]


async def test_first_connection_joins_and_later_ones_aggregate(store: PresenceStore, t0: int) -> None:
    assert kinds(await store.touch(D, [conn("a1", "alice")], now_ms=t0)) == [("user_joined", "alice", "online")]
    assert await store.touch(D, [conn("a2", "alice")], now_ms=t0) == []
    assert await store.set_status(D, "alice", "away", conn_id="a1", now_ms=t0) == []
    changed = await store.set_status(D, "alice", "away", conn_id="a2", now_ms=t0)
    assert kinds(changed) == [("presence_changed", "alice", "away")]
    assert changed[0].name == "Alice"
    back = await store.set_status(D, "alice", "online", conn_id="a1", now_ms=t0)
    assert kinds(back) == [("presence_changed", "alice", "online")]
    snapshot = await store.snapshot(D, now_ms=t0)
    assert snapshot.as_json() == {
        "count": 1,
        "participants": [{"id": "alice", "name": "Alice", "status": "online"}],
        "typing": [],
    }


async def test_a_per_user_status_sets_every_connection(store: PresenceStore, t0: int) -> None:
    await store.touch(D, [conn("a1", "alice"), conn("a2", "alice"), conn("b1", "bob")], now_ms=t0)
    assert kinds(await store.set_status(D, "alice", "away", now_ms=t0)) == [("presence_changed", "alice", "away")]
    statuses = {p.user_id: p.status for p in (await store.snapshot(D, now_ms=t0)).participants}
    assert statuses == {"alice": "away", "bob": "online"}
    assert await store.user_discussions("alice", now_ms=t0) == [D]
    assert await store.user_discussions("carol", now_ms=t0) == []


async def test_leaving_is_debounced_by_the_grace_period(store: PresenceStore, t0: int) -> None:
    await store.touch(D, [conn("a1", "alice"), conn("a2", "alice")], now_ms=t0)
    assert await store.leave(D, "a1", now_ms=t0) == []  # another tab is still open
    assert await store.leave(D, "a2", now_ms=t0) == []  # the last one lingers
    assert (await store.snapshot(D, now_ms=t0 + 1)).as_json()["count"] == 1
    # A reload: the new connection arrives within the grace period. No leave, no join.
    assert await store.touch(D, [conn("a3", "alice")], now_ms=t0 + 1_000) == []
    assert await store.sweep(D, now_ms=t0 + TIMINGS.grace_ms + 1) == []
    # Closed for good this time: gone once the grace period ends, and only then.
    assert await store.leave(D, "a3", now_ms=t0 + 3_000) == []
    assert await store.sweep(D, now_ms=t0 + 3_000 + TIMINGS.grace_ms - 1) == []
    left = await store.sweep(D, now_ms=t0 + 3_000 + TIMINGS.grace_ms)
    assert kinds(left) == [("user_left", "alice", "offline")]
    assert (await store.snapshot(D, now_ms=t0 + 6_000)).as_json()["count"] == 0


async def test_a_lingering_connection_is_not_renewed_by_a_refresh(store: PresenceStore, t0: int) -> None:
    await store.touch(D, [conn("a1", "alice")], now_ms=t0)
    await store.leave(D, "a1", now_ms=t0)
    assert await store.touch(D, [conn("a1", "alice")], now_ms=t0 + 100) == []
    assert kinds(await store.sweep(D, now_ms=t0 + TIMINGS.grace_ms)) == [("user_left", "alice", "offline")]


async def test_leave_many_is_leave_for_each(store: PresenceStore, t0: int) -> None:
    """The same connections closing, one `leave` each in one discussion and one `leave_many` in
    another: the same events, at the same times."""
    one_by_one, together = "disc-one-by-one", "disc-together"
    closing = ["a1", "b1", "nobody", "a2"]
    outcomes: dict[str, list[list[tuple[str, str, str | None]]]] = {}
    for discussion in (one_by_one, together):
        joined = await store.touch(
            discussion,
            [conn("a1", "alice"), conn("a2", "alice", "away"), conn("b1", "bob"), conn("c1", "carol")],
            now_ms=t0,
        )
        assert len(joined) == 3
        if discussion == one_by_one:
            left = [c for conn_id in closing for c in await store.leave(discussion, conn_id, now_ms=t0)]
        else:
            left = await store.leave_many(discussion, closing, now_ms=t0)
        steps = [kinds(left)]
        steps.append(
            [(p.user_id, p.status, "") for p in (await store.snapshot(discussion, now_ms=t0 + 1)).participants]
        )
        # Already lingering, unknown or none at all: nothing happens.
        steps.append(kinds(await store.leave_many(discussion, ["a2", "b1", "nobody"], now_ms=t0 + 1)))
        steps.append(kinds(await store.leave_many(discussion, [], now_ms=t0 + 1)))
        steps.append(kinds(await store.sweep(discussion, now_ms=t0 + TIMINGS.grace_ms - 1)))
        steps.append(sorted(kinds(await store.sweep(discussion, now_ms=t0 + TIMINGS.grace_ms))))
        steps.append(
            [(p.user_id, p.status, "") for p in (await store.snapshot(discussion, now_ms=t0 + 3_000)).participants]
        )
        outcomes[discussion] = steps
    assert outcomes[together] == outcomes[one_by_one]
    assert outcomes[together] == [
        [("presence_changed", "alice", "away")],  # her online tab closed; the away one lingers
        sorted([("alice", "away", ""), ("bob", "online", ""), ("carol", "online", "")]),
        [],
        [],
        [],
        [("user_left", "alice", "offline"), ("user_left", "bob", "offline")],
        [("carol", "online", "")],
    ]


async def test_leave_many_with_a_grace_lingers_that_long(store: PresenceStore, t0: int) -> None:
    """A stopping server's connections linger for the grace it gives, not the timings' grace;
    a reconnect within it is no leave and no join."""
    long_grace = 30_000
    await store.touch(D, [conn("a1", "alice"), conn("a2", "alice"), conn("b1", "bob"), conn("c1", "carol")], now_ms=t0)
    assert await store.leave_many(D, ["a1", "a2", "b1"], now_ms=t0, grace_ms=long_grace) == []
    assert await store.leave(D, "c1", now_ms=t0) == []  # an ordinary leave: the timings' grace
    left = await store.sweep(D, now_ms=t0 + TIMINGS.grace_ms)
    assert kinds(left) == [("user_left", "carol", "offline")]
    present = await store.snapshot(D, now_ms=t0 + TIMINGS.grace_ms)
    assert [p.user_id for p in present.participants] == ["alice", "bob"]
    # Past the connection ttl too: lingering entries go by their grace alone.
    assert await store.sweep(D, now_ms=t0 + TIMINGS.ttl_ms + 1) == []
    # Bob's client comes back (to another server) within the long grace: nothing to tell.
    assert await store.touch(D, [conn("b2", "bob")], now_ms=t0 + 25_000) == []
    assert await store.sweep(D, now_ms=t0 + long_grace - 1) == []
    assert kinds(await store.sweep(D, now_ms=t0 + long_grace)) == [("user_left", "alice", "offline")]
    present = await store.snapshot(D, now_ms=t0 + long_grace)
    assert [p.user_id for p in present.participants] == ["bob"]


async def test_connections_not_refreshed_expire_once(store: PresenceStore, t0: int) -> None:
    await store.touch(D, [conn("a1", "alice"), conn("b1", "bob")], now_ms=t0)
    # Bob's server keeps refreshing; Alice's died (no leave, no refresh).
    await store.touch(D, [conn("b1", "bob")], now_ms=t0 + 9_000)
    assert await store.sweep(D, now_ms=t0 + TIMINGS.ttl_ms - 1) == []
    end = t0 + TIMINGS.ttl_ms
    # Several processes sweep at once: exactly one of them gets the event.
    results = await asyncio.gather(*(store.sweep(D, now_ms=end) for _ in range(4)))
    assert sorted(kinds([c for r in results for c in r])) == [("user_left", "alice", "offline")]
    assert [p.user_id for p in (await store.snapshot(D, now_ms=end)).participants] == ["bob"]


async def test_typing_is_one_entry_per_user_and_expires(store: PresenceStore, t0: int) -> None:
    assert kinds(await store.typing(D, "alice", "Alice", True, now_ms=t0)) == [("typing_started", "alice", None)]
    # More tabs, more keystrokes: still one entry, no more broadcasts.
    for i in range(1, 20):
        assert await store.typing(D, "alice", "Alice", True, now_ms=t0 + i * 100) == []
    last = t0 + 1_900
    assert (await store.snapshot(D, now_ms=last)).typing == [("alice", "Alice")]
    assert await store.sweep(D, now_ms=last + TIMINGS.typing_ttl_ms - 1) == []
    stopped = await store.sweep(D, now_ms=last + TIMINGS.typing_ttl_ms)
    assert kinds(stopped) == [("typing_stopped", "alice", None)]
    assert (await store.snapshot(D, now_ms=last + TIMINGS.typing_ttl_ms)).typing == []


async def test_a_typing_flood_is_throttled_and_ends_consistent(store: PresenceStore, t0: int) -> None:
    """On/off every 30 ms for 3 s: broadcasts at least 500 ms apart, alternating, and the last
    one says what the user last did."""
    broadcasts: list[tuple[int, str]] = []
    now = t0
    for i in range(100):
        now = t0 + i * 30
        for change in await store.sweep(D, now_ms=now) + await store.typing(
            D, "alice", "Alice", i % 2 == 0, now_ms=now
        ):
            broadcasts.append((now, change.type))
    for extra in range(1, 40):  # let held-back broadcasts out
        for change in await store.sweep(D, now_ms=now + extra * 30):
            broadcasts.append((now + extra * 30, change.type))
    times = [at for at, _ in broadcasts]
    assert all(b - a >= TIMINGS.throttle_ms for a, b in itertools.pairwise(times)), broadcasts
    types = [kind for _, kind in broadcasts]
    assert types[0] == "typing_started"
    assert all(a != b for a, b in itertools.pairwise(types)), types
    assert types[-1] == "typing_stopped"  # the flood ended with typing=false
    assert 2 <= len(broadcasts) <= 3_000 // TIMINGS.throttle_ms + 2


async def test_a_start_held_back_by_the_throttle_is_announced_when_the_window_ends(
    store: PresenceStore, t0: int
) -> None:
    await store.typing(D, "alice", "Alice", True, now_ms=t0)
    assert kinds(await store.typing(D, "alice", "Alice", False, now_ms=t0 + 600)) == [("typing_stopped", "alice", None)]
    assert await store.typing(D, "alice", "Alice", True, now_ms=t0 + 700) == []  # inside the window
    assert await store.sweep(D, now_ms=t0 + 1_099) == []
    assert kinds(await store.sweep(D, now_ms=t0 + 1_100)) == [("typing_started", "alice", None)]
    # It expires 5 s after the signal, not after the announcement.
    assert kinds(await store.sweep(D, now_ms=t0 + 700 + TIMINGS.typing_ttl_ms)) == [("typing_stopped", "alice", None)]


async def test_posting_stops_typing_at_once(store: PresenceStore, t0: int) -> None:
    await store.typing(D, "alice", "Alice", True, now_ms=t0)
    await store.typing(D, "bob", "Bob", True, now_ms=t0)
    # 100 ms after the start, inside the throttle window: posting is not held back.
    stopped = await store.stop_typing(D, "alice", now_ms=t0 + 100)
    assert kinds(stopped) == [("typing_stopped", "alice", None)]
    assert await store.stop_typing(D, "alice", now_ms=t0 + 200) == []
    assert await store.stop_typing(D, "carol", now_ms=t0 + 200) == []
    assert (await store.snapshot(D, now_ms=t0 + 200)).typing == [("bob", "Bob")]
    # Typing again right after posting: announced once the window of the stop has passed.
    assert await store.typing(D, "alice", "Alice", True, now_ms=t0 + 300) == []
    assert kinds(await store.sweep(D, now_ms=t0 + 600)) == [("typing_started", "alice", None)]


async def test_an_explicit_stop_inside_the_window_is_emitted_when_it_ends(store: PresenceStore, t0: int) -> None:
    await store.typing(D, "alice", "Alice", True, now_ms=t0)
    assert await store.typing(D, "alice", "Alice", False, now_ms=t0 + 100) == []
    assert (await store.snapshot(D, now_ms=t0 + 100)).typing == []
    assert await store.sweep(D, now_ms=t0 + 499) == []
    assert kinds(await store.sweep(D, now_ms=t0 + 500)) == [("typing_stopped", "alice", None)]
    assert await store.sweep(D, now_ms=t0 + 5_000) == []


async def test_activity_is_remembered(store: PresenceStore, t0: int) -> None:
    assert await store.last_active_ms("alice") is None
    await store.mark_active("alice", now_ms=t0)
    assert await store.last_active_ms("alice") == t0


async def test_every_redis_key_expires(redis_url: str, redis_prefix: str, t0: int) -> None:
    connection = RedisConnection(redis_url)
    store = RedisPresenceStore(connection, prefix=redis_prefix, timings=TIMINGS)
    client = connection.client
    try:
        await store.touch(D, [conn("a1", "alice")], now_ms=t0)
        await store.typing(D, "alice", "Alice", True, now_ms=t0)
        await store.mark_active("alice", now_ms=t0)
        keys = [key async for key in client.scan_iter(match=f"{redis_prefix}:*")]
        expected = {*RedisKeys(redis_prefix).presence(D), RedisKeys(redis_prefix).presence_user("alice")}
        expected.add(RedisKeys(redis_prefix).presence_active("alice"))
        assert {k.decode() for k in keys} == expected
        active = RedisKeys(redis_prefix).presence_active("alice")
        for key in keys:
            limit = TIMINGS.idle_ms if key.decode() == active else 2 * TIMINGS.ttl_ms + TIMINGS.grace_ms + 500
            assert 0 < await client.pttl(key) <= limit, key
    finally:
        await store.close()
        await connection.close()


async def test_sweep_many_is_sweep_for_each(store: PresenceStore, t0: int) -> None:
    """Discussions with something expired, with nothing expired and unknown ones, swept in one
    call: each gets what its own `sweep` would have returned, and is left in the same state."""
    for name in ("gone", "kept"):
        await store.touch(name, [Connection(f"{name}-c", f"{name}-user", name, "online")], now_ms=t0)
    await store.leave("gone", "gone-c", now_ms=t0)  # lingers for the grace, then leaves
    swept = await store.sweep_many(["gone", "kept", "nobody"], now_ms=t0 + TIMINGS.grace_ms)
    assert swept == {"gone": [PresenceChange("user_left", "gone-user", "gone", "offline")], "kept": [], "nobody": []}
    assert await store.sweep_many(["gone", "kept"], now_ms=t0 + TIMINGS.grace_ms) == {"gone": [], "kept": []}
    assert [p.user_id for p in (await store.snapshot("kept", now_ms=t0 + 1)).participants] == ["kept-user"]
    assert await store.sweep_many([], now_ms=t0) == {}


async def test_sweep_and_snapshot_is_sweep_then_snapshot(store: PresenceStore, t0: int) -> None:
    """One call (one round trip on Redis) answers what `sweep` then `snapshot` would: the
    expired leave with their event, the snapshot shows who is left and who is typing."""
    await store.touch(D, [conn("a1", "alice"), conn("b1", "bob", "away")], now_ms=t0)
    await store.touch(D, [conn("b1", "bob", "away")], now_ms=t0 + 9_000)
    await store.typing(D, "bob", "Bob", True, now_ms=t0 + 9_000)
    changes, here = await store.sweep_and_snapshot(D, now_ms=t0 + TIMINGS.ttl_ms - 1)
    assert changes == [] and [p.user_id for p in here.participants] == ["alice", "bob"]
    changes, here = await store.sweep_and_snapshot(D, now_ms=t0 + TIMINGS.ttl_ms)
    assert kinds(changes) == [("user_left", "alice", "offline")]
    assert [(p.user_id, p.status) for p in here.participants] == [("bob", "away")]
    assert here.typing == [("bob", "Bob")]
    assert await store.sweep(D, now_ms=t0 + TIMINGS.ttl_ms) == []  # the sweep was done, once
    assert await store.sweep_and_snapshot("nobody", now_ms=t0) == ([], await store.snapshot("nobody", now_ms=t0))


async def test_touch_many_is_touch_for_each(store: PresenceStore, t0: int) -> None:
    """Several discussions touched in one call: each gets what its own `touch` returns (a first
    connection joins, a second of the same user changes nothing, a refresh changes nothing)."""
    await store.touch("old", [conn("o1", "olga")], now_ms=t0)
    touched = await store.touch_many(
        {"new": [conn("n1", "nina"), conn("n2", "nina")], "old": [conn("o1", "olga")], "empty": []}, now_ms=t0 + 1
    )
    assert touched == {"new": [PresenceChange("user_joined", "nina", "Nina", "online")], "old": [], "empty": []}
    assert [p.user_id for p in (await store.snapshot("new", now_ms=t0 + 2)).participants] == ["nina"]
    # Refreshed: "old" outlives the ttl counted from its first touch.
    swept = await store.sweep_many(["old"], now_ms=t0 + TIMINGS.ttl_ms)
    assert swept == {"old": []}
    assert await store.touch_many({}, now_ms=t0) == {}


async def test_redis_sweeps_only_what_is_due_and_the_safety_net_sweeps_the_rest(
    redis_url: str, redis_prefix: str, t0: int
) -> None:
    """presence.lua keeps each discussion's next deadline in one zset; `sweep_many` looks only
    at discussions due by it. A deadline it does not know of (keys from an older version,
    simulated by removing the entry) is found by a sweep with `only_due=False`."""
    connection = RedisConnection(redis_url)
    store = RedisPresenceStore(connection, prefix=redis_prefix, timings=TIMINGS)
    keys, client = RedisKeys(redis_prefix), connection.client
    try:
        for name in ("a", "b"):
            await store.touch(name, [conn(f"{name}1", f"{name}-user")], now_ms=t0)
        due = {k.decode(): s for k, s in await client.zrange(keys.presence_due, 0, -1, withscores=True)}
        assert due == {keys.presence_conns("a"): t0 + TIMINGS.ttl_ms, keys.presence_conns("b"): t0 + TIMINGS.ttl_ms}
        assert await client.pttl(keys.presence_due) > 0
        assert await store.sweep_many(["a", "b"], now_ms=t0 + 1) == {"a": [], "b": []}
        await client.zrem(keys.presence_due, keys.presence_conns("b"))  # "b"'s deadline unknown
        expired = t0 + TIMINGS.ttl_ms
        swept = await store.sweep_many(["a", "b"], now_ms=expired)
        assert kinds(swept["a"]) == [("user_left", "a-user", "offline")] and swept["b"] == []
        swept = await store.sweep_many(["a", "b"], now_ms=expired, only_due=False)
        assert swept == {"a": [], "b": [PresenceChange("user_left", "b-user", "B-User", "offline")]}
        # Nothing pending any more: neither is listed.
        assert await client.zcard(keys.presence_due) == 0
    finally:
        await store.close()
        await connection.close()
