"""The process's one Redis connection (app/infra/redis_connection.py), against a redis-server of
this module's own, so `CLIENT LIST` counts only what these tests open."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as redis

from app.infra.redis_connection import RedisConnection, time_ms

from .support import private_redis


@pytest.fixture(scope="module")
def own_redis() -> Iterator[str]:
    with private_redis() as url:
        yield url


@pytest.fixture
async def admin(own_redis: str) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(own_redis)
    yield client
    await client.aclose()


async def others(admin: redis.Redis) -> int:
    """Client connections other than the admin's own."""
    mine = await admin.client_id()
    return sum(1 for client in await admin.client_list() if int(client["id"]) != mine)


async def test_closing_the_connection_closes_the_pool_and_every_blocking_reader(
    own_redis: str, admin: redis.Redis
) -> None:
    before = await others(admin)
    connection = RedisConnection(own_redis)
    first, second = connection.blocking_reader(), connection.blocking_reader()
    await connection.ping()
    await first.xread({"nothing": "0"}, block=1)
    await second.xread({"nothing": "0"}, block=1)
    assert await others(admin) == before + 3  # the pool's one connection, one per reader
    await first.aclose()  # a reader its user closed first: closing it again is harmless
    await connection.close()
    assert await others(admin) == before


async def test_server_time_is_redis_clock_in_ms(own_redis: str, admin: redis.Redis) -> None:
    assert time_ms((1_700_000_000, 123_456)) == 1_700_000_000_123
    connection = RedisConnection(own_redis)
    try:
        earlier = time_ms(await admin.time())
        now = await connection.server_time_ms()
        later = time_ms(await admin.time())
        assert earlier <= now <= later
    finally:
        await connection.close()
