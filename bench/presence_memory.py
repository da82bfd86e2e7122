"""Redis memory used by presence for 1,000 users in 100 discussions.

    python bench/presence_memory.py [--users 1000] [--discussions 100]

Fills a Redis (REDIS_URL, or a private redis-server) through `RedisPresenceStore`, exactly as
servers do, under a prefix of its own, and reports `MEMORY USAGE` summed over that prefix's keys
(plus the `INFO memory` delta as a cross-check). Two layouts:
  - spread: each user has one connection, in one discussion (10 users per discussion), and a
    tenth of them are typing;
  - everywhere: each user has one connection in every discussion (100,000 connections), a tenth
    typing in each.
Every user also has the activity key (idle timeout) and the per-user discussion index.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import uuid
from pathlib import Path

import redis.asyncio as redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.infra.redis_connection import RedisConnection  # noqa: E402
from app.presence.store import Connection, PresenceTimings  # noqa: E402
from app.presence.store_redis import RedisPresenceStore  # noqa: E402
from tests.support import private_redis  # noqa: E402


async def used_memory(client: redis.Redis) -> int:
    info = await client.info("memory")
    return int(info["used_memory"])


async def key_memory(client: redis.Redis, prefix: str) -> tuple[int, int]:
    total, count = 0, 0
    async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        total += int(await client.memory_usage(key, samples=0) or 0)
        count += 1
    return total, count


async def fill(url: str, users: int, discussions: int, everywhere: bool) -> dict[str, int]:
    prefix = f"presence-bench-{uuid.uuid4().hex[:8]}"
    connection = RedisConnection(url)
    store = RedisPresenceStore(connection, prefix=prefix, timings=PresenceTimings())
    client = redis.Redis.from_url(url)
    try:
        before = await used_memory(client)
        for d in range(discussions):
            discussion = f"discussion-{d:03d}"
            members = range(users) if everywhere else range(d, users, discussions)
            connections = [Connection(f"conn-{u:04d}-{d:03d}", f"user-{u:04d}", f"User {u:04d}") for u in members]
            for start in range(0, len(connections), 100):
                await store.touch(discussion, connections[start : start + 100])
            for c in connections[::10]:
                await store.typing(discussion, c.user_id, c.name, True)
        await asyncio.gather(*(store.mark_active(f"user-{u:04d}") for u in range(users)))
        after = await used_memory(client)
        total, count = await key_memory(client, prefix)
        connections_total = users * discussions if everywhere else users
        await client.eval(
            "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end", 0, f"{prefix}:*"
        )
        return {"keys": count, "bytes": total, "info_delta": after - before, "connections": connections_total}
    finally:
        await client.aclose()
        await store.close()
        await connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--discussions", type=int, default=100)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        url = os.environ.get("REDIS_URL") or stack.enter_context(private_redis())
        for label, everywhere in (("spread", False), ("everywhere", True)):
            r = asyncio.run(fill(url, args.users, args.discussions, everywhere))
            print(
                f"{label}: {args.users} users, {args.discussions} discussions, {r['connections']} connections: "
                f"{r['keys']} keys, MEMORY USAGE {r['bytes'] / 1024:.0f} KiB "
                f"({r['bytes'] / r['connections']:.0f} B per connection), INFO used_memory delta "
                f"{r['info_delta'] / 1024:.0f} KiB"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
