"""Per-key leases (app/infra/lease.py: the analysis worker's per-discussion run lease), against
real Redis; the embedded variant is one process, so its contract is simply "held while held"."""

from __future__ import annotations

import asyncio

from app.infra.lease import MemoryKeyedLease, RedisKeyedLease
from app.infra.redis_keys import RedisKeys


async def test_one_holder_per_key_and_a_stale_holder_learns_it_lost(redis_url: str, redis_prefix: str) -> None:
    keys = RedisKeys(redis_prefix)
    first = RedisKeyedLease(redis_url, keys, "run", lease_s=0.5)
    second = RedisKeyedLease(redis_url, keys, "run", lease_s=0.5)
    try:
        assert await first.acquire("d1")
        assert await first.acquire("d1")  # renewing one's own
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
    finally:
        await first.close()
        await second.close()


async def test_memory_keyed_lease() -> None:
    lease = MemoryKeyedLease()
    assert not await lease.still_held("d")
    assert await lease.acquire("d") and await lease.still_held("d")
    await lease.release("d")
    assert not await lease.still_held("d")
