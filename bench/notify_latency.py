"""Notification latency and crash recovery, measured on real processes over Redis (issue 6).

    python bench/notify_latency.py [--count 300] [--burst 300]

1. Latency: two server processes on one Redis and one database; the recipient holds a stream
   on process B; another user posts replies and mentions through process A, one after
   another. Each sample is the time from just before the POST to the notification's arrival
   on the recipient's stream. Prints p50/p95/p99/max.
2. Restart mid-burst: posts a burst of replies, SIGKILLs the process holding the worker lease
   while it is working through them, restarts it, and counts what reached the stream: sent,
   received (distinct notification ids), duplicate deliveries, and rows in the REST list.

Uses REDIS_URL when set, else starts a private redis-server. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import Server, SseReader, bearer, free_port, private_redis, server_env, sign


def start(workdir: Path, **env: str) -> Server:
    port = free_port()
    return Server(port, server_env(workdir, port, PARLEY_LOG_LEVEL="ERROR", **env), workdir).start()


async def discussion_with_parent(client: httpx.AsyncClient, server: Server, owner: str, bob: str) -> tuple[str, str]:
    r = await client.post(server.url + "/api/discussions", json={"title": "bench"}, headers=bearer(owner))
    discussion = str(r.json()["id"])
    r = await client.post(
        f"{server.url}/api/discussions/{discussion}/responses", json={"body": "parent"}, headers=bearer(bob)
    )
    return discussion, str(r.json()["id"])


class Collector:
    """Reads the recipient's stream in the background: arrival time per notification event."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        self.changed = asyncio.Event()

    async def run(self, server: Server, token: str) -> None:
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None)) as client,
            client.stream("GET", server.url + "/stream", headers=bearer(token)) as response,
        ):
            reader = SseReader(response.aiter_raw())
            while True:
                event = await reader.next_event()
                if event.event == "notification":
                    self.arrivals.append((time.perf_counter(), event.json["payload"]["notification"]))
                    self.changed.set()

    async def wait_for(self, distinct: int, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            while len({n["id"] for _, n in self.arrivals}) < distinct:
                self.changed.clear()
                await self.changed.wait()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def latency(a: Server, b: Server, count: int) -> None:
    carol, bob = sign("carol"), sign("bob", "bob")
    async with httpx.AsyncClient(timeout=10) as client:
        discussion, parent = await discussion_with_parent(client, a, carol, bob)
        collector = Collector()
        reading = asyncio.create_task(collector.run(b, bob))
        await asyncio.sleep(0.5)  # the stream is open
        sent_at: dict[str, float] = {}
        for i in range(count):
            body = {"body": f"@bob mention {i}"} if i % 2 else {"body": f"reply {i}", "parent_id": parent}
            before = time.perf_counter()
            r = await client.post(f"{a.url}/api/discussions/{discussion}/responses", json=body, headers=bearer(carol))
            sent_at[str(r.json()["id"])] = before
            await asyncio.sleep(0.01)  # a busy discussion, not a flood
        await collector.wait_for(count, 60)
        reading.cancel()
    samples = [(arrived - sent_at[n["response_id"]]) * 1000 for arrived, n in collector.arrivals]
    print(f"latency over {len(samples)} notifications (posted on A, received on B's stream, Redis):")
    print(
        f"  p50 {percentile(samples, 50):.1f} ms   p95 {percentile(samples, 95):.1f} ms   "
        f"p99 {percentile(samples, 99):.1f} ms   max {max(samples):.1f} ms   mean {statistics.mean(samples):.1f} ms"
    )


async def restart_mid_burst(worker: Server, front: Server, burst: int) -> None:
    carol, bob = sign("carol"), sign("bob", "bob")
    async with httpx.AsyncClient(timeout=10) as client:
        discussion, parent = await discussion_with_parent(client, front, carol, bob)
        collector = Collector()
        reading = asyncio.create_task(collector.run(front, bob))
        await asyncio.sleep(0.5)
        before = await client.get(front.url + "/api/notifications?limit=200", headers=bearer(bob))
        known = {n["id"] for n in before.json()}

        async def post(i: int) -> None:
            await client.post(
                f"{front.url}/api/discussions/{discussion}/responses",
                json={"body": f"burst {i}", "parent_id": parent},
                headers=bearer(carol),
            )

        posting = asyncio.gather(*(post(i) for i in range(burst)))
        # Kill the lease holder once it has delivered part of the burst.
        while len(collector.arrivals) < burst // 5:
            collector.changed.clear()
            await collector.changed.wait()
        assert worker.process is not None
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(5)
        at_kill = len(collector.arrivals)
        await posting
        worker.start()
        await collector.wait_for(burst, 120)
        await asyncio.sleep(2)  # let any late duplicate arrive, to be counted
        reading.cancel()
        r = await client.get(front.url + "/api/notifications?limit=200", headers=bearer(bob))
        listed = [n for n in r.json() if n["id"] not in known]
    deliveries = [n["id"] for _, n in collector.arrivals if n["id"] not in known]
    distinct = set(deliveries)
    print(f"restart mid-burst ({burst} replies, lease holder SIGKILLed after {at_kill} deliveries, then restarted):")
    print(
        f"  sent {burst}   received {len(distinct)} distinct   duplicates {len(deliveries) - len(distinct)}   "
        f"stored (REST, newest 200) {len(listed)}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--burst", type=int, default=150, help="at most 200 (one REST page)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, private_redis() if not os.environ.get("REDIS_URL") else _given() as url:
        env = {"REDIS_URL": url, "PARLEY_REDIS_PREFIX": f"bench-{os.getpid()}", "PARLEY_NOTIFY_LEASE_S": "2"}
        a = start(Path(tmp), **env)  # first up: holds the worker lease
        b = start(Path(tmp), **env)
        try:
            await latency(a, b, args.count)
            await restart_mid_burst(a, b, args.burst)
        finally:
            a.stop()
            b.stop()


class _given:
    def __enter__(self) -> str:
        return os.environ["REDIS_URL"]

    def __exit__(self, *_: object) -> None:
        return None


if __name__ == "__main__":
    asyncio.run(main())
