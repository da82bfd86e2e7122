"""Fault suite: nothing is silently lost, nothing is doubled, whatever we break.

Two real server processes (one serving streams on the lean front, one on Hypercorn) share one
SQLite database and one PRIVATE redis-server that the tests kill and start again. 20 readers
stream over both servers as a browser's EventSource does: raw HTTP `GET /stream`, `Last-Event-ID`
on every reconnect, waiting the `retry:` the server asked for, going through a "load balancer"
(the next live server) when theirs is gone. A reader told `sync_required` refetches the
discussion over REST, as `parley.js` does, and streams on from the notice's cursor.

Meanwhile 200 posts go in at 20/s (each retried with its `client_id` until it is stored), and
one fault is injected. Each scenario prints posted / delivered / doubled / sync_required per
reader and asserts, per reader: no response event twice, and every posted response either
delivered by the stream or, only after a `sync_required`, recovered by the refetch. A stream
request is never refused (a non-200 answer would end a real EventSource for good).

Run with `-s` to see the figures: `pytest tests/test_faults.py -s -q`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from .support import RedisServer, Server, SseReader, bearer, redis_server, sign

pytestmark = pytest.mark.slow

READERS = 20
POSTS = 200
POSTS_PER_S = 20.0
FAULT_AT_POST = 60
# Bounds: how long a post is retried, and how long readers get to catch up at the end.
POST_DEADLINE_S = 30.0
SETTLE_S = 45.0
MAX_RETRY_WAIT_S = 6.0
OFFLINE_S = 2.0


@dataclass
class Cluster:
    redis: RedisServer
    servers: list[Server]
    live: list[Server]
    start_another: Callable[[], Server]
    discussion: str = ""

    def pick(self, n: int) -> Server:
        """A load balancer: the n-th live server, round robin."""
        return self.live[n % len(self.live)]

    def take_down(self, server: Server, sig: int) -> None:
        """Signal the server and wait for it to exit; readers that reconnect meanwhile may
        reach it while it stops. Then the balancer stops routing to it."""
        server.stop(sig)
        self.live.remove(server)

    def add_server(self) -> None:
        """A server started now (after the fault), which the balancer routes to at once."""
        server = self.start_another()
        self.servers.append(server)
        self.live.append(server)


@pytest.fixture
def cluster_factory(start_server: Callable[..., Server], tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    stack = contextlib.ExitStack()

    def make(persistence: str = "none", **env: str) -> Cluster:
        redis = stack.enter_context(redis_server(persistence=persistence))
        common = {
            "REDIS_URL": redis.url,
            "PARLEY_REDIS_PREFIX": "faults",
            "PARLEY_RATE_LIMIT_PER_MIN": "100000",
            "PARLEY_HEARTBEAT_S": "5",
            **env,
        }
        servers = [
            start_server(tmp_path, PARLEY_LEAN_STREAM="1", **common),
            start_server(tmp_path, PARLEY_LEAN_STREAM="0", **common),
        ]
        return Cluster(redis, servers, list(servers), lambda: start_server(tmp_path, **common))

    with stack:
        yield make


@dataclass
class Reader:
    """One EventSource, as a browser runs it."""

    n: int
    cluster: Cluster
    token: str
    last_event_id: str
    slow_s: float = 0.0
    stream_ids: Counter[str] = field(default_factory=Counter)
    recovered: set[str] = field(default_factory=set)
    sync_required: int = 0
    connects: int = 0
    refused: list[int] = field(default_factory=list)

    async def run(self, client: httpx.AsyncClient) -> None:
        attempt = 0
        while True:
            server = self.cluster.pick(self.n + attempt)
            attempt += 1
            self.connects += 1
            retry_s = 2.0
            try:
                headers = {**bearer(self.token), "Last-Event-ID": self.last_event_id}
                params = {"discussion": self.cluster.discussion}
                async with client.stream("GET", server.url + "/stream", params=params, headers=headers) as r:
                    if r.status_code != 200 or not r.headers.get("content-type", "").startswith("text/event-stream"):
                        self.refused.append(r.status_code)  # a real EventSource would stop here for good
                    else:
                        reader = SseReader(r.aiter_raw())
                        try:
                            await self._consume(client, reader)
                        finally:
                            retry_s = (reader.retry_ms or 2000) / 1000
            except (httpx.HTTPError, OSError, StopAsyncIteration):
                pass  # the connection failed or ended: reconnect, as an EventSource does
            await asyncio.sleep(min(retry_s, MAX_RETRY_WAIT_S))

    async def _consume(self, client: httpx.AsyncClient, reader: SseReader) -> None:
        while True:
            event = await reader.next_event()
            if event.id is not None:
                self.last_event_id = event.id
            if event.event == "sync_required":
                self.sync_required += 1
                await self._refetch(client)
            elif event.event == "response_posted":
                self.stream_ids[event.json["payload"]["response"]["id"]] += 1
            if self.slow_s:
                await asyncio.sleep(self.slow_s)

    async def _refetch(self, client: httpx.AsyncClient) -> None:
        """What the page does on `sync_required`: reload the thread over REST."""
        after = "0"
        for _ in range(1000):
            server = self.cluster.pick(self.n)
            r = await client.get(
                f"{server.url}/api/discussions/{self.cluster.discussion}/responses",
                params={"after": after, "limit": "200"},
                headers=bearer(self.token),
            )
            r.raise_for_status()
            page = r.json()["responses"]
            self.recovered.update(response["id"] for response in page)
            if len(page) < 200:
                return
            after = page[-1]["id"]

    def has_all(self, posted: set[str]) -> bool:
        return posted <= set(self.stream_ids) | self.recovered


@dataclass
class Outcome:
    posted: set[str]
    readers: list[Reader]
    elapsed_s: float


async def post_all(
    cluster: Cluster,
    client: httpx.AsyncClient,
    count: int,
    rate_per_s: float | None,
    concurrency: int,
    on_fault: Callable[[], Any] | None,
) -> set[str]:
    """`count` posts, each retried with its client_id until stored; `on_fault()` (a coroutine
    function) runs once FAULT_AT_POST posts have been started."""
    posted: set[str] = set()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    start = time.monotonic()
    fault_task: asyncio.Task[Any] | None = None

    async def one(i: int) -> None:
        body = {"body": f"post {i}", "client_id": f"c{i}"}
        token = sign(f"poster{i % 10}")
        deadline = time.monotonic() + POST_DEADLINE_S
        attempt = 0
        while True:
            server = cluster.pick(i + attempt)
            attempt += 1
            with contextlib.suppress(httpx.HTTPError):
                r = await client.post(
                    f"{server.url}/api/discussions/{cluster.discussion}/responses", json=body, headers=bearer(token)
                )
                if r.status_code in (200, 201):
                    posted.add(r.json()["id"])
                    return
            assert time.monotonic() < deadline, f"post {i} not stored within {POST_DEADLINE_S}s"
            await asyncio.sleep(0.2)

    async def worker() -> None:
        nonlocal fault_task
        while not queue.empty():
            i = queue.get_nowait()
            if rate_per_s is not None:
                await asyncio.sleep(max(0.0, start + i / rate_per_s - time.monotonic()))
            if i == FAULT_AT_POST and on_fault is not None:
                fault_task = asyncio.create_task(on_fault())
            await one(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if fault_task is not None:
        await fault_task
    return posted


async def run_scenario(
    cluster: Cluster,
    name: str,
    fault: Callable[[], Any] | None,
    *,
    posts: int = POSTS,
    rate_per_s: float | None = POSTS_PER_S,
    concurrency: int = 4,
    slow_readers: int = 0,
    offline_readers: int = 0,
) -> Outcome:
    """Readers stream while posts go in and `fault()` runs (in a thread) at FAULT_AT_POST.
    The last `offline_readers` readers close their stream just before the fault and come back
    OFFLINE_S after it, resuming by `Last-Event-ID` (a laptop lid, a train tunnel)."""
    started = time.monotonic()
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    timeout = httpx.Timeout(10.0, read=30.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        owner = sign("owner")
        r = await client.post(cluster.pick(0).url + "/api/discussions", json={"title": name}, headers=bearer(owner))
        assert r.status_code == 201, r.text
        cluster.discussion = r.json()["id"]
        listed = await client.get(
            f"{cluster.pick(0).url}/api/discussions/{cluster.discussion}/responses", headers=bearer(owner)
        )
        cursor = listed.json()["cursor"]
        readers = [
            Reader(n, cluster, sign(f"reader{n}"), cursor, slow_s=0.1 if n < slow_readers else 0.0)
            for n in range(READERS)
        ]
        tasks = [asyncio.create_task(reader.run(client)) for reader in readers]
        offline = range(READERS - offline_readers, READERS)

        async def on_fault() -> None:
            for n in offline:
                tasks[n].cancel()
            await asyncio.gather(*(tasks[n] for n in offline), return_exceptions=True)
            if fault is not None:
                await asyncio.to_thread(fault)
            await asyncio.sleep(OFFLINE_S)
            for n in offline:
                tasks[n] = asyncio.create_task(readers[n].run(client))

        try:
            await wait_for(lambda: all(reader.connects for reader in readers), 15)
            posted = await post_all(cluster, client, posts, rate_per_s, concurrency, on_fault)
            # Bounded: every reader gets everything (or its refetch does), or the test fails.
            with contextlib.suppress(TimeoutError):
                await wait_for(lambda: all(reader.has_all(posted) for reader in readers), SETTLE_S)
            await asyncio.sleep(1.0)  # anything doubled late shows up too
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    outcome = Outcome(posted, readers, time.monotonic() - started)
    report(name, outcome)
    return outcome


async def wait_for(condition: Callable[[], bool], timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.05)


def report(name: str, outcome: Outcome) -> None:
    posted = outcome.posted
    print(f"\n== {name}: posted {len(posted)} in {outcome.elapsed_s:.1f}s")
    print("reader  delivered  doubled  sync_required  recovered  missing  connects  refused")
    for reader in outcome.readers:
        delivered = posted & set(reader.stream_ids)
        doubled = sum(count - 1 for count in reader.stream_ids.values() if count > 1)
        missing = posted - set(reader.stream_ids) - reader.recovered
        print(
            f"{reader.n:>6}  {len(delivered):>9}  {doubled:>7}  {reader.sync_required:>13}  "
            f"{len(posted & reader.recovered - delivered):>9}  {len(missing):>7}  {reader.connects:>8}  "
            f"{len(reader.refused):>7}"
        )


def assert_nothing_silently_lost(outcome: Outcome, *, sync_allowed: bool) -> None:
    for reader in outcome.readers:
        doubled = {rid: count for rid, count in reader.stream_ids.items() if count > 1}
        assert doubled == {}, f"reader {reader.n} got events twice: {doubled}"
        assert reader.refused == [], f"reader {reader.n}'s stream was refused: {reader.refused}"
        not_streamed = outcome.posted - set(reader.stream_ids)
        if not sync_allowed:
            assert reader.sync_required == 0, f"reader {reader.n} was needlessly told sync_required"
        if not_streamed:
            assert reader.sync_required > 0, f"reader {reader.n} silently lost {len(not_streamed)} events"
            assert not_streamed <= reader.recovered, f"reader {reader.n} lost events even after refetching"


def restart_redis(cluster: Cluster, down_s: float = 2.0) -> Callable[[], None]:
    """Kill Redis, start it again, then start one more server (which must adopt the epoch the
    survivors use, not mint its own)."""

    def fault() -> None:
        cluster.redis.stop(signal.SIGKILL)
        time.sleep(down_s)
        cluster.redis.start()
        cluster.add_server()

    return fault


async def test_redis_killed_and_restarted_without_persistence(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(persistence="none")
    outcome = await run_scenario(
        cluster, "redis restarted without persistence", restart_redis(cluster), offline_readers=4
    )
    assert len(outcome.posted) == POSTS
    # Events stored before the restart are gone from Redis: every reader must be told, once
    # (a second one would mean the servers disagree on the new epoch).
    assert_nothing_silently_lost(outcome, sync_allowed=True)
    assert [reader.sync_required for reader in outcome.readers] == [1] * READERS


async def test_redis_killed_and_restarted_with_aof(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(persistence="aof")
    outcome = await run_scenario(cluster, "redis restarted with AOF", restart_redis(cluster), offline_readers=4)
    assert len(outcome.posted) == POSTS
    # Nothing was lost by Redis: every reader resumes exactly, none needs a refetch.
    assert_nothing_silently_lost(outcome, sync_allowed=False)


async def test_one_server_sigkilled(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory()
    outcome = await run_scenario(
        cluster, "one server SIGKILLed", lambda: cluster.take_down(cluster.servers[1], signal.SIGKILL)
    )
    assert len(outcome.posted) == POSTS
    assert_nothing_silently_lost(outcome, sync_allowed=False)


async def test_one_server_sigtermed(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory()
    outcome = await run_scenario(
        cluster, "one server SIGTERMed", lambda: cluster.take_down(cluster.servers[0], signal.SIGTERM)
    )
    assert len(outcome.posted) == POSTS
    assert_nothing_silently_lost(outcome, sync_allowed=False)


async def test_slow_readers(cluster_factory: Callable[..., Cluster]) -> None:
    # Small buffers, so the slow readers really overflow theirs and are dropped.
    cluster = cluster_factory(PARLEY_MAX_BUFFERED_EVENTS="8")
    outcome = await run_scenario(cluster, "slow readers (2 of 20 read at 10/s)", None, slow_readers=2)
    assert len(outcome.posted) == POSTS
    assert_nothing_silently_lost(outcome, sync_allowed=True)


async def test_a_burst_of_1000_posts_to_one_discussion(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory()
    outcome = await run_scenario(cluster, "burst of 1,000 posts", None, posts=1000, rate_per_s=None, concurrency=20)
    assert len(outcome.posted) == 1000
    assert_nothing_silently_lost(outcome, sync_allowed=True)
