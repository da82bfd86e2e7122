"""The event log on a real Redis Cluster (3 masters, 3 replicas, started here): shards on
different masters in one order, the stream checks through two server processes, and a master
failover while events flow with 0 silently lost events (docs/SCALING.md)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from redis.crc import key_slot

from app.core.backends import make_backends
from app.infra.redis_cluster import RedisClusterConnection
from app.infra.redis_connection import RedisConnection, time_ms
from app.infra.redis_keys import shard_of
from app.log.cursor import Cursor, Position
from app.log.eventlog import Append, CursorUnavailable, LogGap
from app.log.eventlog_redis import NotReplicated
from app.log.events import Event, envelope_body
from app.settings import ConfigError, Settings

from .cluster_support import RedisCluster, redis_cluster, spread_prefix
from .support import OwnRedisEventLog, Server, bearer, sign
from .test_eventlog import tailing, wait_for
from .test_stream import PRESENCE_EVENTS, events, make_discussion, open_stream, post

# One module, one cluster, one xdist worker; bounded (the whole module takes ~30 s).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("redis-cluster"), pytest.mark.timeout(90)]

SHARDS = 3


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with redis_cluster() as started:
        yield started


@pytest.fixture
def prefix(cluster: RedisCluster) -> str:
    """Keys of this test's own whose three log shards are on the three masters."""
    return spread_prefix(cluster, SHARDS, f"t{uuid.uuid4().hex[:6]}-")


def body(text: str) -> bytes:
    return envelope_body("response_posted", discussion_id="d1", user=None, payload={"text": text})


def test_the_settings_of_a_sharded_or_clustered_log() -> None:
    env = {"REDIS_URL": "redis://127.0.0.1:6379/0", "PARLEY_LOG_REDIS_URL": "redis+cluster://10.0.0.5:7000"}
    settings = Settings.from_env({**env, "PARLEY_LOG_SHARDS": "16"})
    assert (settings.log_redis_url, settings.log_shards) == ("redis+cluster://10.0.0.5:7000", 16)
    assert Settings.from_env({}).log_shards == 1
    for wrong in (
        {"PARLEY_LOG_REDIS_URL": env["PARLEY_LOG_REDIS_URL"]},  # presence and leases need REDIS_URL
        {"REDIS_URL": "redis+cluster://10.0.0.5:7000"},  # only the log can be on a cluster
        {**env, "PARLEY_LOG_SHARDS": "0"},
    ):
        with pytest.raises(ConfigError):
            Settings.from_env(wrong)


async def test_an_append_no_replica_confirmed_counts_as_failed(redis_url: str, redis_prefix: str) -> None:
    """PARLEY_LOG_WAIT_REPLICAS on one Redis without replicas: a durable append is refused
    (`NotReplicated`: an outbox row stays and is relayed); ephemeral events do not wait."""
    log = OwnRedisEventLog(redis_url, prefix=redis_prefix, retention_s=3600, wait_replicas=1)
    await log.open()
    try:
        with pytest.raises(NotReplicated):
            await log.append("d:x", "response_posted", body("needs a replica"))
        await log.append("d:x", "typing_started", body("ephemeral"), durable=False)
        with pytest.raises(NotReplicated):  # a batch with a durable event waits too
            await log.append_many(
                [Append("d:x", "typing_started", body("e"), durable=False), Append("d:x", "response_posted", body("d"))]
            )
        await log.append_many([Append("d:x", "typing_started", body("ephemeral"), durable=False)])
    finally:
        await log.close()


def cluster_clients(cluster: RedisCluster) -> int:
    """Client connections on every node of the cluster, other than the counting ones."""
    total = 0
    for node in cluster.nodes:
        with node.client() as client:
            total += len(client.client_list()) - 1
    return total


async def test_backends_give_the_log_its_own_cluster_connection_and_close_both(
    cluster: RedisCluster, prefix: str, redis_url: str, tmp_path: Path
) -> None:
    """PARLEY_LOG_REDIS_URL: the log alone runs on a `RedisClusterConnection`; presence and
    limits stay on REDIS_URL's `RedisConnection`. `Backends.close()` closes both, readers too."""
    env = {"REDIS_URL": redis_url, "PARLEY_REDIS_PREFIX": prefix, "PARLEY_LOG_REDIS_URL": cluster.url}
    settings = Settings.from_env({**env, "PARLEY_LOG_SHARDS": str(SHARDS), "PARLEY_DATA_DIR": str(tmp_path)})
    before = cluster_clients(cluster)
    backends = make_backends(settings)
    assert isinstance(backends.log_redis, RedisClusterConnection) and isinstance(backends.redis, RedisConnection)
    assert backends.event_log.client is backends.log_redis.client  # type: ignore[attr-defined]
    await backends.open()
    start = await backends.event_log.head()
    appended = await backends.event_log.append("d:own", "response_posted", body("on the cluster"))
    journal = await backends.event_log.read_journal(start, 10, 0.1)
    assert [e.cursor for e in journal] == [appended.cursor]
    with cluster.masters()[0].client() as node:
        clock = time_ms(node.time())
    assert abs(await backends.log_redis.server_time_ms() - clock) < 5_000  # one node's clock, in ms
    assert cluster_clients(cluster) > before
    await backends.close()
    deadline = time.monotonic() + 10
    while cluster_clients(cluster) > before and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert cluster_clients(cluster) == before


async def test_shards_on_three_masters_keep_one_order(cluster: RedisCluster, prefix: str) -> None:
    masters = {cluster.master_of_slot(key_slot(f"{{{prefix}:log{i}}}".encode())).port for i in range(SHARDS)}
    assert len(masters) == SHARDS
    topics = [f"d:{i}" for i in range(9)]
    assert {shard_of(topic, SHARDS) for topic in topics} == set(range(SHARDS))
    # wait_replicas=1: every durable append below is confirmed by its master's replica (WAIT).
    log = OwnRedisEventLog(cluster.url, prefix=prefix, retention_s=3600, shards=SHARDS, wait_replicas=1)
    await log.open()
    try:
        start = await log.head()
        async with tailing(log) as received:
            appended = [await log.append(topics[i % 9], "response_posted", body(str(i))) for i in range(60)]
            concurrent = await asyncio.gather(*(log.append(t, "response_posted", body(t)) for t in topics * 4))
            batch = await log.append_many([Append(topics[i % 9], "response_posted", body(str(i))) for i in range(45)])
            await wait_for(lambda: len(received) >= 141, timeout_s=10)
        live = [item for item in received if isinstance(item, Event)]
        # What one process appends in turn keeps its order across shards; the tail gives every
        # event once, in one order, whichever master it came from.
        assert [e.position for e in appended] == sorted(e.position for e in appended)
        assert [e.position for e in live] == sorted({e.position for e in [*appended, *concurrent, *batch]})
        # A batch: each topic's events in the order given, all after what came before.
        assert min(e.position for e in batch) > max(e.position for e in [*appended, *concurrent])
        for topic in topics:
            mine = [e for e in batch if e.topic == topic]
            assert [e.position for e in mine] == sorted(e.position for e in mine)
        everything = await log.read_after(topics, start, limit=1000)
        assert [e.position for e in everything] == [e.position for e in live]
        middle = Cursor.parse(appended[29].cursor)
        resumed = await log.read_after(topics[:4], middle, limit=1000)
        assert [e.position for e in resumed] == [
            e.position for e in live if e.position > middle.position and e.topic in topics[:4]
        ]
        assert all(Cursor.parse(e.cursor).epoch == log.epoch for e in live)
    finally:
        await log.close()


async def test_a_shard_that_loses_its_data_makes_old_cursors_sync_required(cluster: RedisCluster, prefix: str) -> None:
    """Issue 11's design per shard: one master flushed (its replica follows) takes its shard's
    epoch with it; the log's epoch changes, old cursors are refused, the tail reports the gap
    before the first event of the new epoch, and the other shards' events are untouched."""
    topics = [f"d:{i}" for i in range(9)]
    log = OwnRedisEventLog(cluster.url, prefix=prefix, retention_s=3600, shards=SHARDS)
    await log.open()
    try:
        async with tailing(log) as received:
            before = [await log.append(topic, "response_posted", body(topic)) for topic in topics]
            await wait_for(lambda: len(received) >= len(topics), timeout_s=10)
            old_epoch, old_cursor = log.epoch, Cursor.parse(before[-1].cursor)
            lost = next(t for t in topics if shard_of(t, SHARDS) == 1)
            with cluster.master_of_slot(key_slot(f"{{{prefix}:log1}}".encode())).client() as node:
                node.flushall()
            after = await log.append(lost, "response_posted", body("after"))
            await wait_for(lambda: any(isinstance(i, Event) and i.position == after.position for i in received), 10)
        assert log.epoch != old_epoch
        assert Cursor.parse(after.cursor).epoch == log.epoch
        with pytest.raises(CursorUnavailable) as caught:
            await log.read_after(topics, old_cursor, limit=100)
        assert caught.value.reason == "unknown_epoch"
        gap = next(i for i, item in enumerate(received) if isinstance(item, LogGap))
        assert all(isinstance(item, Event) for item in received[:gap])
        assert [e.position for e in received[gap + 1 :] if isinstance(e, Event)] == [after.position]
        kept = next(t for t in topics if shard_of(t, SHARDS) == 0)
        head = await log.head()
        assert await log.read_after([kept], Cursor(log.epoch, head.position), limit=10) == []
    finally:
        await log.close()


@pytest.fixture
def pair(
    start_server: Callable[..., Server], cluster: RedisCluster, redis_url: str, prefix: str, tmp_path: Path
) -> list[Server]:
    # Presence, leases and limits stay on one Redis (REDIS_URL); the log is on the cluster.
    env = {
        "REDIS_URL": redis_url,
        "PARLEY_REDIS_PREFIX": prefix,
        "PARLEY_LOG_REDIS_URL": cluster.url,
        "PARLEY_LOG_SHARDS": str(SHARDS),
        "PARLEY_LOG_WAIT_REPLICAS": "1",
        "PARLEY_RATE_LIMIT_PER_MIN": "0",
        "PARLEY_DISCUSSION_LIMIT_PER_MIN": "0",
    }
    return [start_server(tmp_path, **env) for _ in range(2)]


async def discussions_on_every_shard(client: httpx.AsyncClient, server: Server, token: str) -> list[str]:
    made: list[str] = []
    while {shard_of(f"d:{d}", SHARDS) for d in made} != set(range(SHARDS)):
        assert len(made) < 30, made
        made.append(await make_discussion(client, server, token))
    return made


def response_ids(received: list[object]) -> list[str]:
    return [e.json["payload"]["response"]["id"] for e in received]  # type: ignore[attr-defined]


async def test_streams_through_two_servers_see_every_post_in_order_and_resume(pair: list[Server]) -> None:
    a, b = pair
    alice = sign("alice")
    async with httpx.AsyncClient(timeout=10) as client:
        discussions = await discussions_on_every_shard(client, a, alice)
        async with open_stream(a, alice, discussions) as on_a, open_stream(b, alice, discussions) as on_b:
            posted = [
                await post(client, pair[i % 2], alice, discussions[i % len(discussions)], f"r{i}") for i in range(12)
            ]
            got_a, got_b = await events(on_a, 12), await events(on_b, 12)
        assert response_ids(got_a) == response_ids(got_b) == [p["id"] for p in posted]
        assert [e.id for e in got_a] == [e.id for e in got_b]  # one order, the same cursors
        # Offline while posts land on every shard through both servers; one Last-Event-ID resumes all.
        missed = [await post(client, pair[i % 2], alice, discussions[i % len(discussions)], f"m{i}") for i in range(9)]
        async with open_stream(b, alice, discussions, headers={"Last-Event-ID": got_a[-1].id or ""}) as stream:
            replayed = await events(stream, 9)
            live = await post(client, a, alice, discussions[0], "live")
            [after] = await events(stream, 1)
    assert response_ids([*replayed, after]) == [p["id"] for p in [*missed, live]]


@dataclass
class Reader:
    """A client that keeps one stream open on its server, reconnecting with its last cursor as
    a browser does, and notes every response it got and every `sync_required`."""

    server: Server
    token: str
    discussions: list[str]
    seen: set[str] = field(default_factory=set)
    told: int = 0
    reconnects: int = 0
    disorder: int = 0
    cursor: str = ""

    async def run(self) -> None:
        """Until cancelled."""
        while True:
            headers = {"Last-Event-ID": self.cursor} if self.cursor else {}
            last = Position(0, 0)
            with contextlib.suppress(httpx.HTTPError, AssertionError, StopAsyncIteration):
                async with open_stream(self.server, self.token, self.discussions, headers=headers) as stream:
                    while True:
                        event = await stream.next_event()
                        if event.event in PRESENCE_EVENTS:
                            continue
                        if event.id:
                            position = Cursor.parse(event.id).position
                            self.disorder += position <= last
                            last, self.cursor = position, event.id
                        if event.event == "sync_required":
                            self.told += 1
                        elif event.event == "response_posted":
                            self.seen.add(event.json["payload"]["response"]["id"])
            self.reconnects += 1
            await asyncio.sleep(0.2)


async def test_a_master_failover_while_events_flow_loses_nothing_silently(
    pair: list[Server], cluster: RedisCluster, prefix: str
) -> None:
    alice = sign("alice")
    async with httpx.AsyncClient(timeout=15) as client:
        discussions = await discussions_on_every_shard(client, pair[0], alice)
        readers = [Reader(pair[i % 2], sign(f"reader{i}"), discussions) for i in range(4)]
        tasks = [asyncio.create_task(reader.run()) for reader in readers]
        await asyncio.sleep(1.0)  # every reader connected
        acked: list[str] = []
        failed = 0

        async def poster(worker: int, until: float) -> None:
            nonlocal failed
            i = 0
            while time.monotonic() < until:
                server, discussion = pair[(worker + i) % 2], discussions[(worker + i) % len(discussions)]
                url = f"{server.url}/api/discussions/{discussion}/responses"
                with contextlib.suppress(httpx.HTTPError):
                    r = await client.post(url, json={"body": f"w{worker} {i}"}, headers=bearer(alice))
                    if r.status_code == 201:
                        acked.append(r.json()["id"])
                    else:
                        failed += 1
                i += 1

        # Post from 3 workers for ~12 s; from 2 s in, the master of each shard fails over in turn.
        until = time.monotonic() + 12
        posting = asyncio.gather(*(poster(w, until) for w in range(3)))
        await asyncio.sleep(2)
        took = []
        for shard in range(SHARDS):
            slot = key_slot(f"{{{prefix}:log{shard}}}".encode())
            master = cluster.master_of_slot(slot)
            began = time.monotonic()
            promoted = await asyncio.to_thread(cluster.fail_over, master)
            took.append(time.monotonic() - began)
            assert promoted.port != master.port
            assert cluster.master_of_slot(slot).port == promoted.port
            await asyncio.sleep(1)
        # Then a crash: shard 0's master SIGKILLed; its replica takes over after the node timeout.
        # Appends wait for a replica's confirmation (PARLEY_LOG_WAIT_REPLICAS=1), so none the
        # old master acknowledged is missing from the new one; until the killed node is back
        # (as the new master's replica) appends to that shard fail and the outbox relays them.
        slot = key_slot(f"{{{prefix}:log0}}".encode())
        killed = cluster.master_of_slot(slot)
        began = time.monotonic()
        await asyncio.to_thread(cluster.kill_master, killed)
        took.append(time.monotonic() - began)
        await asyncio.to_thread(killed.start)
        await posting
        # Every reader gets every acknowledged post, or was told `sync_required`; outbox rows of
        # posts whose append failed are relayed within seconds.
        wanted = set(acked)
        with contextlib.suppress(TimeoutError):
            await wait_for(lambda: all(wanted <= r.seen or r.told for r in readers), timeout_s=20)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    lost = [len(wanted - r.seen) for r in readers if not r.told]
    # Appends a replica did not confirm in time (around the crash) were relayed from the outbox.
    unconfirmed = sum(server.log().count("replicas confirmed the append") for server in pair)
    print(
        f"\n{len(took)} failovers (3 manual, 1 SIGKILL; longest {max(took):.2f}s): "
        f"{len(acked)} posts acknowledged ({failed} refused), "
        f"readers {len(readers)}, lost {sum(lost)}, sync_required {sum(r.told for r in readers)}, "
        f"reconnects {sum(r.reconnects for r in readers)}, out of order {sum(r.disorder for r in readers)}, "
        f"appends not confirmed by a replica (relayed) {unconfirmed}"
    )
    assert len(acked) > 50
    assert sum(lost) == 0
    assert sum(r.disorder for r in readers) == 0
