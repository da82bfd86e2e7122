"""Publishes "response_posted" events to the Socket.IO server at a target rate; prints one JSON line.

The counterpart of bench/publisher.py (its open-loop pacing, `publish()`, is reused as is):
- `--mode api` (default): `POST /publish {"discussion", "body"}` over a few keep-alive HTTP
  connections; the server does `io.to("discussion:<id>").emit("response_posted", …)`.
- `--mode redis`: `XADD` straight into the Redis Streams adapter's stream, in the adapter's own
  entry format (uid "emitter", nsp "/", type 3 = BROADCAST, data = {packet, opts}), trimmed with
  `MAXLEN ~`. Every server reads it from the stream like a broadcast from another node, and a
  reconnecting client's session recovery finds it there too: this is how the herd workload
  publishes while the server is down.

Every body carries `bench t=<time.time_ns()> i=<n>` (bench.publisher.body_text), the send time the
client turns into latency. Runs as its own process, pinned next to the load generator.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import CLIENT_CORE, pin_to, run_async  # noqa: E402
from bench.publisher import Send, body_text, publish  # noqa: E402


async def api_sender(url: str, connections: int) -> tuple[Send, Any]:
    import httpx

    client = httpx.AsyncClient(
        base_url=url,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=httpx.Timeout(30.0),
    )

    async def send(discussion: str, index: int) -> bool:
        try:
            response = await client.post("/publish", json={"discussion": discussion, "body": body_text(index)})
        except httpx.HTTPError:
            return False
        return response.status_code == 201

    return send, client.aclose


def envelope(discussion: str, body: str, seq: int) -> dict[str, Any]:
    """What server.js emits for POST /publish (same shape, same size)."""
    return {
        "type": "response_posted",
        "discussion_id": discussion,
        "user": {"id": "bench-publisher", "name": "bench-publisher"},
        "payload": {
            "response": {
                "id": str(seq),
                "discussion_id": discussion,
                "body": body,
                "created_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            }
        },
        "seq": seq,
    }


async def redis_sender(redis_url: str, stream: str, maxlen: int) -> tuple[Send, Any]:
    import redis.asyncio as redis

    client = redis.Redis.from_url(redis_url)
    seqs: Counter[str] = Counter()

    async def send(discussion: str, index: int) -> bool:
        seqs[discussion] += 1
        event = envelope(discussion, body_text(index), seqs[discussion])
        packet = {"type": 2, "data": ["response_posted", event], "nsp": "/"}
        opts = {"rooms": [f"discussion:{discussion}"], "except": [], "flags": {}}
        fields = {"uid": "emitter", "nsp": "/", "type": "3", "data": json.dumps({"packet": packet, "opts": opts})}
        try:
            await client.xadd(stream, fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
        except redis.RedisError:
            return False
        return True

    return send, client.aclose


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    discussions: list[str] = json.loads(Path(args.discussions_file).read_text())  # noqa: ASYNC240 (once, at start)
    if args.mode == "api":
        send, close = await api_sender(args.url, args.connections)
    else:
        send, close = await redis_sender(args.redis_url, args.stream, args.maxlen)
    try:
        return await publish(send, discussions, args.rate, args.duration_s, args.connections)
    finally:
        await close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["api", "redis"], default="api")
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--stream", default="sio:stream", help="the adapter's stream (<SIO_PREFIX>:stream)")
    parser.add_argument("--maxlen", type=int, default=100_000, help="MAXLEN ~ as the adapter trims")
    parser.add_argument("--discussions-file", required=True)
    parser.add_argument("--rate", type=float, required=True, help="events per second")
    parser.add_argument("--duration-s", type=float, required=True)
    parser.add_argument("--connections", type=int, default=4, help="keep-alive connections (= concurrent sends)")
    parser.add_argument("--core", type=int, default=CLIENT_CORE)
    args = parser.parse_args()
    pin_to(args.core)
    print(json.dumps(run_async(main_async(args))))


if __name__ == "__main__":
    main()
