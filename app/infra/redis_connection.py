"""One Redis connection per process, shared by every Redis backend (event log, presence,
rate limits, leases, active users).

It holds the process's one connection pool and hands out *blocking readers*: clients on
connections of their own for blocking reads (`XREAD BLOCK`), which would otherwise hold a
pooled connection for seconds each. Built once per process (`app.core.backends.make_backends`)
and closed once on shutdown: closing it closes the pool and every reader it handed out, so a
backend never closes what it shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import weakref

import redis.asyncio as redis

from app.infra.redis_options import CONNECT_TIMEOUT_S, resilient

# The whole process's pool: what the event log (50) and the presence store (20) had each
# before they shared one. Blocking: a burst waits for a connection instead of failing past the
# pool's size (PITFALLS: the default pool raises beyond its maximum).
POOL_SIZE = 70
POOL_WAIT_S = 10.0
# Probe an idle reader connection after 10 s, every 5 s, give up after 3 misses (~25 s).
KEEPALIVE_OPTIONS = {socket.TCP_KEEPIDLE: 10, socket.TCP_KEEPINTVL: 5, socket.TCP_KEEPCNT: 3}
CLOSE_TIMEOUT_S = 1.0


def time_ms(reply: tuple[int, int] | list[int]) -> int:
    """Milliseconds from a Redis `TIME` reply (seconds, microseconds): one clock for all servers."""
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


class RedisConnection:
    """The pool (`client`), blocking readers, and the server's clock, for one Redis URL."""

    def __init__(self, url: str, *, pool_size: int = POOL_SIZE, pool_wait_s: float = POOL_WAIT_S) -> None:
        self.url = url
        pool = redis.BlockingConnectionPool.from_url(url, max_connections=pool_size, timeout=pool_wait_s, **resilient())
        # `from_pool`: the client owns the pool, so closing the client disconnects it.
        self.client: redis.Redis = redis.Redis.from_pool(pool)
        self._readers: weakref.WeakSet[redis.Redis] = weakref.WeakSet()

    def blocking_reader(self) -> redis.Redis:
        """A client for blocking reads (XREAD BLOCK), on connections of its own.

        No socket timeout: with redis-py 8 on Python 3.11, cancelling a read that runs under a
        socket timeout is sometimes swallowed, and shutdown hangs (reproduced: 5 of 60 cancels).
        Blocking reads return every few seconds anyway; TCP keepalive notices a dead Redis host.
        Its user may close it early; `close` closes whatever is still open.
        """
        reader = redis.Redis.from_url(
            self.url,
            socket_timeout=None,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_keepalive=True,
            socket_keepalive_options=KEEPALIVE_OPTIONS,
        )
        self._readers.add(reader)
        return reader

    async def server_time_ms(self) -> int:
        """Redis's clock, in ms: the one clock every server of a cluster agrees on."""
        return time_ms(await self.client.time())

    async def ping(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        """Close the pool and every blocking reader (closing one twice is harmless)."""
        for reader in list(self._readers):
            # A reader may be stuck on a cancelled blocking read: never let it hold up shutdown.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader.aclose(), CLOSE_TIMEOUT_S)
        self._readers.clear()
        await self.client.aclose()
