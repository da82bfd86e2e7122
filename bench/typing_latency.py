"""Typing-indicator latency end to end through Redis between two server processes (NFR-002).

    python bench/typing_latency.py [--signals 200]

Starts redis-server (or uses REDIS_URL) and two real Parley processes, A and B, on one Redis.
A reader streams the discussion from B over SSE. For each signal, a different user sends
`PUT /api/discussions/{id}/typing {"typing": true}` to A; the sample is the time from just before
that request is sent to the `typing_started` event for that user being parsed off B's stream.
(A different user per signal, so the 500 ms throttle never holds a start back: this measures the
path, not the throttle.) Prints p50/p95/p99/max in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import Server, SseReader, bearer, free_port, private_redis, server_env, sign  # noqa: E402


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def measure(a: Server, b: Server, signals: int) -> list[float]:
    owner = sign("owner", "Owner")
    reader_token = sign("reader", "Reader")
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(a.url + "/api/discussions", json={"title": "bench"}, headers=bearer(owner))
        r.raise_for_status()
        discussion = r.json()["id"]
        tokens = [sign(f"typist-{i}", f"Typist {i}") for i in range(signals)]
        # Warm up: token verification caches, connection pools, the users table.
        for token in tokens:
            await client.get(f"{a.url}/api/discussions/{discussion}", headers=bearer(token))
        samples: list[float] = []
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=30.0)) as streaming,
            streaming.stream(
                "GET", b.url + "/stream", params={"discussion": discussion}, headers=bearer(reader_token)
            ) as stream,
        ):
            reader = SseReader(stream.aiter_raw())
            url = f"{a.url}/api/discussions/{discussion}/typing"
            for i, token in enumerate(tokens):
                started = time.perf_counter()
                sent = asyncio.ensure_future(client.put(url, json={"typing": True}, headers=bearer(token)))
                async with asyncio.timeout(10):
                    while True:
                        event = await reader.next_event()
                        if event.event == "typing_started" and event.json["user"]["id"] == f"typist-{i}":
                            break
                samples.append((time.perf_counter() - started) * 1000)
                (await sent).raise_for_status()
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--signals", type=int, default=200)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        redis_url = os.environ.get("REDIS_URL") or stack.enter_context(private_redis())
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        prefix = f"bench-{os.getpid()}"
        servers = []
        for _ in range(2):
            port = free_port()
            env = server_env(workdir, port, REDIS_URL=redis_url, PARLEY_REDIS_PREFIX=prefix)
            server = Server(port, env, workdir)
            stack.callback(server.stop)
            servers.append(server.start())
        samples = asyncio.run(measure(servers[0], servers[1], args.signals))
    print("typing latency, PUT on process A -> typing_started on an SSE stream of process B, via Redis")
    print(f"signals={len(samples)}")
    for p in (50, 95, 99):
        print(f"p{p}={percentile(samples, p):.1f} ms")
    print(f"mean={statistics.fmean(samples):.1f} ms max={max(samples):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
