"""Leases (app/infra/lease.py), one contract run against both backends: in memory and in a real
Redis (one `RedisConnection`, as a server process has). Only Redis has more than one holder
(one per process), so who wins, expiry and refused saves are tested on it alone, after the
contract. Two leases on one connection stand for two processes: each has its own token."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from app.infra.lease import KeyedLease, Lease
from app.infra.lease_memory import MemoryKeyedLease, MemoryLease
from app.infra.lease_redis import RedisKeyedLease, RedisLease
from app.infra.redis_connection import RedisConnection
from app.infra.redis_keys import RedisKeys

CHECKPOINT_TTL_S = 60


@pytest.fixture(params=["memory", "redis"])
def new_lease(request: pytest.FixtureRequest) -> Callable[[], Lease]:
    if request.param == "memory":
        return MemoryLease
    connection: RedisConnection = request.getfixturevalue("redis_connection")
    keys = RedisKeys(request.getfixturevalue("redis_prefix"))
    return lambda: RedisLease(connection, keys, "work", lease_s=5, checkpoint_ttl_s=CHECKPOINT_TTL_S)


@pytest.fixture(params=["memory", "redis"])
def new_keyed_lease(request: pytest.FixtureRequest) -> Callable[[], KeyedLease]:
    if request.param == "memory":
        return MemoryKeyedLease
    connection: RedisConnection = request.getfixturevalue("redis_connection")
    keys = RedisKeys(request.getfixturevalue("redis_prefix"))
    return lambda: RedisKeyedLease(connection, keys, "run", lease_s=5)


# The contract: one holder's view.


async def test_a_free_lease_is_held_and_renewed_with_no_checkpoint_yet(new_lease: Callable[[], Lease]) -> None:
    lease = new_lease()
    assert await lease.checkpoint() is None
    assert await lease.hold()
    assert await lease.hold()  # renewing one's own
    await lease.close()


async def test_initialise_sets_the_checkpoint_only_if_there_is_none(new_lease: Callable[[], Lease]) -> None:
    lease = new_lease()
    await lease.initialise("c1")
    await lease.initialise("c2")  # a second start of the cluster keeps where the first got to
    assert await lease.checkpoint() == "c1"


async def test_the_holder_saves_checkpoints_and_keeps_them_across_a_release(new_lease: Callable[[], Lease]) -> None:
    lease = new_lease()
    assert await lease.hold()
    assert await lease.save("c1")
    assert await lease.save("c2")
    assert await lease.checkpoint() == "c2"
    await lease.release()
    assert await lease.checkpoint() == "c2"  # the next holder resumes from here
    assert await lease.hold()
    assert await lease.checkpoint() == "c2"


async def test_closing_a_lease_twice_is_harmless(new_lease: Callable[[], Lease]) -> None:
    lease = new_lease()
    await lease.hold()
    await lease.release()
    await lease.close()
    await lease.close()


async def test_a_keyed_lease_holds_each_key_until_released(new_keyed_lease: Callable[[], KeyedLease]) -> None:
    lease = new_keyed_lease()
    assert not await lease.still_held("d1")  # never acquired
    assert await lease.acquire("d1")
    assert await lease.acquire("d1")  # renewing one's own
    assert await lease.still_held("d1")
    assert not await lease.still_held("d2")  # keys are independent
    await lease.release("d1")
    assert not await lease.still_held("d1")
    await lease.release("d1")  # releasing what is not held does nothing
    assert await lease.acquire("d1")
    await lease.close()


# Redis: several holders (processes).


async def test_one_holder_at_a_time_and_the_next_resumes_from_the_checkpoint(
    redis_connection: RedisConnection, redis_prefix: str
) -> None:
    keys = RedisKeys(redis_prefix)
    first, second = (
        RedisLease(redis_connection, keys, "work", lease_s=5, checkpoint_ttl_s=CHECKPOINT_TTL_S) for _ in range(2)
    )
    assert await first.hold()
    assert not await second.hold()
    assert await first.save("c1")
    assert not await second.save("theirs")  # not the holder: refused
    assert await second.checkpoint() == "c1"
    await second.release()  # not the holder: does nothing
    assert not await second.hold()
    await first.release()
    assert await second.hold()
    assert await second.checkpoint() == "c1"
    # The checkpoint expires with the log's retention window.
    assert 0 < await redis_connection.client.pttl(keys.checkpoint("work")) <= CHECKPOINT_TTL_S * 1000


async def test_a_holder_that_stalled_past_its_lease_cannot_save(
    redis_connection: RedisConnection, redis_prefix: str
) -> None:
    keys = RedisKeys(redis_prefix)
    first, second = (
        RedisLease(redis_connection, keys, "work", lease_s=0.3, checkpoint_ttl_s=CHECKPOINT_TTL_S) for _ in range(2)
    )
    assert await first.hold()
    assert await first.save("c1")
    await asyncio.sleep(0.5)  # the lease runs out: first stalled
    assert await second.hold()
    assert not await first.save("late")
    assert not await first.hold()
    assert await second.checkpoint() == "c1"


async def test_one_holder_per_key_and_a_stale_holder_learns_it_lost(
    redis_connection: RedisConnection, redis_prefix: str
) -> None:
    keys = RedisKeys(redis_prefix)
    first = RedisKeyedLease(redis_connection, keys, "run", lease_s=0.5)
    second = RedisKeyedLease(redis_connection, keys, "run", lease_s=0.5)
    assert await first.acquire("d1")
    assert not await second.acquire("d1")
    assert await second.acquire("d2")  # other keys are independent
    assert await first.still_held("d1") and not await second.still_held("d1")
    await asyncio.sleep(0.7)  # the lease runs out: first stalled
    assert not await first.still_held("d1")
    # still_held never takes a free key: it stays free for whoever acquires it.
    assert await second.acquire("d1")
    await first.release("d1")  # not ours any more: releasing does nothing
    assert await second.still_held("d1")
    await second.release("d1")
    assert await first.acquire("d1")


async def test_closing_a_lease_leaves_the_shared_connection_open(
    redis_connection: RedisConnection, redis_prefix: str
) -> None:
    keys = RedisKeys(redis_prefix)
    lease = RedisLease(redis_connection, keys, "work", lease_s=5, checkpoint_ttl_s=CHECKPOINT_TTL_S)
    keyed = RedisKeyedLease(redis_connection, keys, "run", lease_s=5)
    await lease.close()
    await keyed.close()
    await redis_connection.ping()
    assert await RedisLease(redis_connection, keys, "work", lease_s=5, checkpoint_ttl_s=CHECKPOINT_TTL_S).hold()
