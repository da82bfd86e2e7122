"""Common-ground analysis latency and burst cost, on real processes over Redis (issue 10).

    python bench/analysis_latency.py [--tries 60] [--burst 100]

1. Latency: two server processes on one Redis and one database; a reader holds a stream on
   process B; on process A one participant flips their stance on a proposition (agree <->
   disagree), one try at a time. Each sample is the time from just before the POST to the
   arrival, on B's stream, of the `analysis_updated` whose counts show the flip. Tries are
   spaced past `PARLEY_CG_MIN_INTERVAL_MS`, so each is a stance change in a quiet discussion
   (the figure includes the debounce, `PARLEY_CG_DEBOUNCE_MS`). Prints p50/p95/max.
2. Burst: `--burst` stance-bearing responses from 20 participants, posted 8 at a time through
   both processes. Prints how long posting took, the recomputations (the sum of both
   processes' `parley_analysis_runs_total`) and the `analysis_updated` events B's stream got
   until the document showed the final counts.

Uses REDIS_URL when set, else starts a private redis-server. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.notify_latency import _given, percentile, start
from tests.support import Server, SseReader, bearer, private_redis, sign


class AnalysisCollector:
    """Reads B's stream in the background: each `analysis_updated` with its arrival time."""

    def __init__(self) -> None:
        self.updates: list[tuple[float, dict[str, Any]]] = []
        self.changed = asyncio.Event()

    async def run(self, server: Server, token: str, discussion: str) -> None:
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None)) as client,
            client.stream(
                "GET", server.url + "/stream", params={"discussion": discussion}, headers=bearer(token)
            ) as response,
        ):
            reader = SseReader(response.aiter_raw())
            while True:
                event = await reader.next_event()
                if event.event == "analysis_updated":
                    self.updates.append((time.perf_counter(), event.json["payload"]))
                    self.changed.set()

    async def wait_for(self, wanted: Any, timeout_s: float = 30.0) -> tuple[float, dict[str, Any]]:
        """The first update (from now on) for which `wanted(document)` holds."""
        start_at = len(self.updates)
        async with asyncio.timeout(timeout_s):
            while True:
                for arrived, doc in self.updates[start_at:]:
                    if wanted(doc):
                        return arrived, doc
                start_at = len(self.updates)
                self.changed.clear()
                await self.changed.wait()


def counts(doc: dict[str, Any], proposition: str) -> tuple[int, int, int]:
    entry = next((p for p in doc["propositions"] if p["id"] == proposition), None)
    return (-1, -1, -1) if entry is None else (entry["agree"], entry["disagree"], entry["pass"])


async def runs_total(client: httpx.AsyncClient, servers: tuple[Server, ...]) -> float:
    total = 0.0
    for server in servers:
        text = (await client.get(server.url + "/metrics")).text
        match = re.search(r"^parley_analysis_runs_total ([0-9.e+-]+)$", text, re.M)
        total += float(match.group(1)) if match else 0.0
    return total


async def setup(client: httpx.AsyncClient, a: Server, owner: str, texts: list[str]) -> tuple[str, list[str]]:
    r = await client.post(a.url + "/api/discussions", json={"title": "bench"}, headers=bearer(owner))
    discussion = str(r.json()["id"])
    ids = []
    for text in texts:
        r = await client.post(
            f"{a.url}/api/discussions/{discussion}/propositions", json={"text": text}, headers=bearer(owner)
        )
        ids.append(str(r.json()["id"]))
    return discussion, ids


async def latency(a: Server, b: Server, tries: int) -> None:
    owner, flipper, reader = sign("owner"), sign("flipper"), sign("reader")
    async with httpx.AsyncClient(timeout=10) as client:
        discussion, [lanes] = await setup(client, a, owner, ["Bike lanes make streets safer"])
        collector = AnalysisCollector()
        reading = asyncio.create_task(collector.run(b, reader, discussion))
        await collector.wait_for(lambda d: counts(d, lanes) == (0, 0, 0))
        samples = []
        for i in range(tries):
            stance, expected = ("agree", (1, 0, 0)) if i % 2 == 0 else ("disagree", (0, 1, 0))
            before = time.perf_counter()
            r = await client.post(
                f"{a.url}/api/discussions/{discussion}/responses",
                json={"body": f"try {i}", "stances": {lanes: stance}},
                headers=bearer(flipper),
            )
            assert r.status_code == 201, r.text
            arrived, _ = await collector.wait_for(lambda d, e=expected: counts(d, lanes) == e)
            samples.append((arrived - before) * 1000)
            await asyncio.sleep(1.1)  # past the minimum interval: a quiet discussion again
        reading.cancel()
    print(f"stance change on A -> analysis_updated on B's stream, {len(samples)} tries (Redis, 2 processes):")
    print(
        f"  p50 {percentile(samples, 50):.0f} ms   p95 {percentile(samples, 95):.0f} ms   "
        f"max {max(samples):.0f} ms   mean {statistics.mean(samples):.0f} ms"
    )


async def burst(a: Server, b: Server, size: int) -> None:
    users = [f"voter{i}" for i in range(20)]
    tokens = {user: sign(user) for user in users}
    reader = sign("reader")
    rng = random.Random(10)
    async with httpx.AsyncClient(timeout=30) as client:
        discussion, ids = await setup(client, a, sign("owner"), ["Shade", "Cost", "Noise"])
        collector = AnalysisCollector()
        reading = asyncio.create_task(collector.run(b, reader, discussion))
        await collector.wait_for(lambda d: len(d["propositions"]) == 3)
        runs_before = await runs_total(client, (a, b))
        updates_before = len(collector.updates)
        latest: dict[tuple[str, str], tuple[int, str]] = {}
        gate = asyncio.Semaphore(8)

        async def post(i: int) -> None:
            user = rng.choice(users)
            stances = {p: rng.choice(["agree", "agree", "disagree", "pass"]) for p in ids}
            async with gate:
                r = await client.post(
                    f"{(a, b)[i % 2].url}/api/discussions/{discussion}/responses",
                    json={"body": f"burst {i}", "stances": stances},
                    headers=bearer(tokens[user]),
                )
            response_id = int(r.json()["id"])
            for p, stance in stances.items():
                if (user, p) not in latest or latest[(user, p)][0] < response_id:
                    latest[(user, p)] = (response_id, stance)

        started = time.perf_counter()
        await asyncio.gather(*(post(i) for i in range(size)))
        posted_s = time.perf_counter() - started
        final = {p: (0, 0, 0) for p in ids}
        for (_, p), (_, stance) in latest.items():
            agree, disagree, passed = final[p]
            final[p] = (agree + (stance == "agree"), disagree + (stance == "disagree"), passed + (stance == "pass"))
        arrived, _ = await collector.wait_for(lambda d: all(counts(d, p) == final[p] for p in ids), 60)
        settled_s = arrived - started
        runs = await runs_total(client, (a, b)) - runs_before
        updates = len(collector.updates) - updates_before
        reading.cancel()
    print(f"burst of {size} stance-bearing responses (8 at a time, through A and B):")
    print(
        f"  posted in {posted_s:.2f} s   final counts on B after {settled_s:.2f} s   "
        f"recomputations {runs:.0f}   analysis_updated events on B {updates}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tries", type=int, default=60)
    parser.add_argument("--burst", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, private_redis() if not os.environ.get("REDIS_URL") else _given() as url:
        env = {"REDIS_URL": url, "PARLEY_REDIS_PREFIX": f"bench-{os.getpid()}"}
        a = start(Path(tmp), **env)
        b = start(Path(tmp), **env)
        try:
            await latency(a, b, args.tries)
            await burst(a, b, args.burst)
        finally:
            a.stop()
            b.stop()


if __name__ == "__main__":
    asyncio.run(main())
