"""The log tail's blocking XREAD on a connection of its own, past redis-py's command path.

At 1,000 events/s the tail's XREAD returns one or two events a call, and through
`Redis.xread` each call went through the pool (take and give back a connection), the retry
wrapper, the command's observability hooks and the reply's conversion to RESP2 shape: 46 % of
the web process's GIL time in the seed benchmark (issue 13, docs/PERFORMANCE.md), more than
the fan-out to 10,000 streams. Here the tail keeps one redis-py `Connection` (made from the
reader's pool settings, so URL, credentials, TLS, protocol and keepalive are the same) and
sends each XREAD on it directly, reading the parsed (hiredis) reply.

A call that fails or is cancelled mid-reply leaves the connection in an unknown state: it is
closed, and the next call opens another. Only for a single Redis: a cluster's reads go through
`RedisCluster`, which knows which node holds which shard.
"""

from __future__ import annotations

import contextlib
from typing import Any

import redis.asyncio as redis

Entry = tuple[bytes, dict[bytes, bytes]]


class DirectReads:
    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._connection: Any = None

    async def xread(self, wanted: dict[str, str], *, block_ms: int, count: int) -> list[tuple[bytes, list[Entry]]]:
        """`XREAD COUNT count BLOCK block_ms STREAMS keys... ids...`: each stream's entries,
        their fields as a dict (as `Redis.xread` answers), none when the block timed out."""
        connection = self._connection
        if connection is None:
            connection = self._pool.connection_class(**self._pool.connection_kwargs)
            self._connection = connection
        command = ["XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS", *wanted.keys(), *wanted.values()]
        try:
            if not connection.is_connected:
                await connection.connect()
            await connection.send_packed_command(connection.pack_command(*command), check_health=False)
            reply = await connection.read_response()
        except BaseException:
            await self.close()
            raise
        if not reply:
            return []
        # RESP3 answers a map of stream -> entries, RESP2 a list of [stream, entries] pairs.
        streams = reply.items() if isinstance(reply, dict) else reply
        return [(key, [(entry_id, _fields(flat or [])) for entry_id, flat in entries]) for key, entries in streams]

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.disconnect()


def _fields(flat: list[bytes]) -> dict[bytes, bytes]:
    pairs = iter(flat)
    return dict(zip(pairs, pairs, strict=True))
