"""`DirectReads`, the log tail's XREAD past redis-py's command path, on a real Redis: it answers
what `Redis.xread` answers (RESP2 and RESP3), nothing when the block times out, and a read
cancelled mid-block leaves no half-read reply behind for the next one."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as redis

from app.log.direct_read import DirectReads


@pytest.mark.parametrize("protocol", [2, 3])
async def test_direct_reads_answer_what_redis_py_answers(redis_url: str, redis_prefix: str, protocol: int) -> None:
    client = redis.Redis.from_url(redis_url, protocol=protocol)
    first, second = f"{redis_prefix}:a", f"{redis_prefix}:b"
    direct = DirectReads(client)
    try:
        ids = [await client.xadd(first, {"t": "x", "n": str(n)}) for n in range(3)]
        await client.xadd(second, {"t": "y", "e": ""})
        wanted = {first: "0-0", second: "0-0"}

        read = await direct.xread(wanted, block_ms=100, count=10)

        # redis-py's own answer, in the shape the tail always read (its default protocol's).
        reference = redis.Redis.from_url(redis_url)
        expected = await reference.xread(wanted, block=100, count=10)  # type: ignore[arg-type]
        await reference.aclose()
        assert read == [(key, entries) for key, entries in expected]
        assert [entry_id for entry_id, _ in read[0][1]] == ids
        assert read[1][1][0][1] == {b"t": b"y", b"e": b""}
        assert await direct.xread({first: ids[-1].decode()}, block_ms=50, count=10) == []
    finally:
        await direct.close()
        await client.delete(first, second)
        await client.aclose()


async def test_a_cancelled_read_is_dropped_and_the_next_read_is_whole(redis_url: str, redis_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    stream = f"{redis_prefix}:c"
    direct = DirectReads(client)
    try:
        blocked = asyncio.create_task(direct.xread({stream: "$"}, block_ms=5_000, count=10))
        await asyncio.sleep(0.2)
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocked
        # Had the cancelled XREAD's connection been kept as it was, its reply (the first entry
        # alone: it ends the block) would be read as the answer to the next command.
        added = [await client.xadd(stream, {"t": "x", "n": str(n)}) for n in range(2)]
        read = await direct.xread({stream: "0-0"}, block_ms=100, count=10)
        entries = [(entry_id, {b"t": b"x", b"n": str(n).encode()}) for n, entry_id in enumerate(added)]
        assert read == [(stream.encode(), entries)]
    finally:
        await direct.close()
        await client.delete(stream)
        await client.aclose()
