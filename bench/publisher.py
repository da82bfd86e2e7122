"""Publishes responses at a target rate, and prints what it published as one JSON line.

Three ways in:
- `--mode api` (default): `POST /api/discussions/{id}/responses` over a few keep-alive HTTP
  connections (httpx), as a user would; the send time therefore covers the whole API path
  (auth, validation, the SQLite write, the log append) as well as the fan-out.
- `--mode redis`: straight into the log with `app.log.eventlog_redis.RedisEventLog.append` (the
  same Lua script the server uses), for rates the API path on one core cannot reach. The
  server's hub reads it from the firehose like any other event.
- `--mode redis-ephemeral`: the same, not durable: the script writes the firehose only (not the
  topic stream and the journal), as Parley publishes typing and presence, and as Socket.IO's
  Redis Streams adapter writes its one stream: the same Redis work for both (issue 13).

Every body carries `bench t=<time.time_ns()> i=<n>`: the send time the load generator turns
into delivery latency. Discussions are taken round-robin. Pacing is open-loop: event i is due
at start + i/rate whatever happened before; if the server falls behind, the publisher sends
as fast as its connections allow and reports the rate it achieved.

Runs as its own process (pinned next to the load generator), so its CPU is not the client's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import CLIENT_CORE, pin_to, run_async, sign  # noqa: E402

Send = Callable[[str, int], Awaitable[bool]]


def body_text(index: int) -> str:
    return f"bench t={time.time_ns()} i={index}"


async def api_sender(url: str, connections: int) -> tuple[Send, Callable[[], Awaitable[None]]]:
    import httpx

    client = httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": "Bearer " + sign("bench-publisher")},
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=httpx.Timeout(30.0),
    )

    async def send(discussion: str, index: int) -> bool:
        try:
            response = await client.post(f"/api/discussions/{discussion}/responses", json={"body": body_text(index)})
        except httpx.HTTPError:
            return False
        return response.status_code == 201

    return send, client.aclose


async def redis_sender(
    redis_url: str, prefix: str, *, durable: bool = True
) -> tuple[Send, Callable[[], Awaitable[None]]]:
    from app.infra.redis_connection import RedisConnection
    from app.log import topics
    from app.log.eventlog_redis import RedisEventLog
    from app.log.events import envelope_body

    connection = RedisConnection(redis_url)
    log = RedisEventLog(connection, prefix=prefix, retention_s=24 * 3600)
    await log.open()
    user = {"id": "bench-publisher", "name": "bench-publisher"}

    async def send(discussion: str, index: int) -> bool:
        # The same envelope the API would publish, minus the database write.
        response = {"id": str(index), "discussion_id": discussion, "body": body_text(index)}
        body = envelope_body("response_posted", discussion_id=discussion, user=user, payload={"response": response})
        await log.append(topics.discussion(discussion), "response_posted", body, durable=durable)
        return True

    async def close() -> None:
        await log.close()
        await connection.close()

    return send, close


async def publish(
    send: Send, discussions: list[str], rate: float, duration_s: float, workers: int
) -> dict[str, object]:
    total = max(1, int(rate * duration_s))
    per_discussion: Counter[str] = Counter()
    errors = 0
    next_index = 0
    started = time.monotonic()
    max_behind_s = 0.0

    # A server that cannot keep up must not keep the publisher going for ever: past this, the
    # events not yet sent are dropped from the run and reported as `unsent`.
    give_up_at = started + duration_s * 1.5 + 5

    async def worker() -> None:
        nonlocal next_index, errors, max_behind_s
        while next_index < total and time.monotonic() < give_up_at:
            index = next_index
            next_index += 1
            due = started + index / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                max_behind_s = max(max_behind_s, -delay)
            discussion = discussions[index % len(discussions)]
            if await send(discussion, index):
                per_discussion[discussion] += 1
            else:
                errors += 1

    async with asyncio.timeout(duration_s * 5 + 60):
        await asyncio.gather(*(worker() for _ in range(workers)))
    elapsed = time.monotonic() - started
    return {
        "sent": next_index,
        "unsent": total - next_index,
        "ok": sum(per_discussion.values()),
        "errors": errors,
        "elapsed_s": round(elapsed, 3),
        "achieved_rate": round(sum(per_discussion.values()) / elapsed, 1),
        "max_behind_s": round(max_behind_s, 3),
        "per_discussion": dict(per_discussion),
    }


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    discussions: list[str] = json.loads(Path(args.discussions_file).read_text())  # noqa: ASYNC240 (once, at start)
    if args.mode == "api":
        send, close = await api_sender(args.url, args.connections)
    else:
        send, close = await redis_sender(args.redis_url, args.prefix, durable=args.mode == "redis")
    try:
        return await publish(send, discussions, args.rate, args.duration_s, args.connections)
    finally:
        await close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["api", "redis", "redis-ephemeral"], default="api")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--prefix", default="parley")
    parser.add_argument("--discussions-file", required=True)
    parser.add_argument("--rate", type=float, required=True, help="responses per second")
    parser.add_argument("--duration-s", type=float, required=True)
    parser.add_argument("--connections", type=int, default=4, help="keep-alive connections (= concurrent sends)")
    parser.add_argument("--core", type=int, default=CLIENT_CORE)
    args = parser.parse_args()
    pin_to(args.core)
    print(json.dumps(run_async(main_async(args))))


if __name__ == "__main__":
    main()
