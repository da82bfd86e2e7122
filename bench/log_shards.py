"""Appends per second into the event log on a Redis Cluster, for 1, 2, 3 log shards.

Starts a local Redis Cluster (3 masters + 3 replicas, `tests/cluster_support.py`), then for
each shard count: a fresh key prefix whose shards sit on different masters, `--processes`
appender processes each running `--concurrency` append loops (`RedisEventLog.append`, durable,
~300-byte bodies, topics spread over 1,000 discussions) for `--duration-s`, while this process
tails the log (one process's reader: it ticks lagging shards, as a server's does). Prints per
shard count: appends/s, append latency p50/p99, Redis CPU per append (user+sys of all masters,
INFO CPU, divided by appends), the reader's CPU per event (this process's CPU time while it
only tails) and how the appends spread over the masters.

    python -m bench.log_shards --shards 1,2,3 --duration-s 5 --processes 2 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import statistics
import time
import uuid
from typing import Any

from app.infra.redis_keys import shard_of
from app.log.cursor import ORIGIN
from app.log.eventlog_redis import RedisEventLog
from app.log.events import Event, envelope_body
from app.log.redis_tail import ShardedTail
from tests.cluster_support import RedisCluster, redis_cluster, spread_prefix
from tests.support import OwnRedisEventLog

BODY_TEXT = "x" * 200


async def _append_for(
    url: str, prefix: str, shards: int, concurrency: int, duration_s: float, wait_replicas: int
) -> dict[str, Any]:
    log = OwnRedisEventLog(url, prefix=prefix, retention_s=3600, shards=shards, wait_replicas=wait_replicas)
    await log.open()
    latencies: list[float] = []
    deadline = time.monotonic() + duration_s

    async def loop() -> None:
        while time.monotonic() < deadline:
            topic = f"d:{random.randrange(1000)}"
            body = envelope_body("response_posted", discussion_id=topic, user=None, payload={"text": BODY_TEXT})
            began = time.perf_counter()
            await log.append(topic, "response_posted", body)
            latencies.append(time.perf_counter() - began)

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    await log.close()
    return {"count": len(latencies), "latencies": latencies[:: max(1, len(latencies) // 2000)]}


def _appender(args: tuple[str, str, int, int, float, int]) -> dict[str, Any]:
    return asyncio.run(_append_for(*args))


def _redis_cpu_s(cluster: RedisCluster) -> dict[int, float]:
    used = {}
    for node in cluster.masters():
        with node.client() as client:
            info = client.info("cpu")
        used[node.port] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return used


async def _tail_count(log: RedisEventLog, stop: asyncio.Event, seen: list[Event]) -> None:
    async for item in log.tail():
        if isinstance(item, Event):
            seen.append(item)
        if stop.is_set():
            return


async def measure(
    cluster: RedisCluster, shards: int, processes: int, concurrency: int, duration_s: float, tails: int, wait: int
) -> dict[str, Any]:
    prefix = spread_prefix(cluster, shards, f"bench{uuid.uuid4().hex[:6]}-")
    log = OwnRedisEventLog(cluster.url, prefix=prefix, retention_s=3600, shards=shards)
    await log.open()
    stop = asyncio.Event()
    seens: list[list[Event]] = [[] for _ in range(tails)]
    tasks = [asyncio.create_task(_tail_count(log, stop, seen)) for seen in seens]
    await asyncio.sleep(0.5)
    cpu_before = _redis_cpu_s(cluster)
    began, tail_cpu = time.monotonic(), time.process_time()
    job = (cluster.url, prefix, shards, concurrency, duration_s, wait)
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        results = await asyncio.to_thread(pool.map, _appender, [job] * processes)
    elapsed = time.monotonic() - began
    cpu_after = _redis_cpu_s(cluster)
    appended = sum(r["count"] for r in results)
    deadline = time.monotonic() + 10
    while min(len(seen) for seen in seens) < appended and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    tail_cpu = time.process_time() - tail_cpu  # this process only tails (and waits on the pool)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    seen = min(seens, key=len)
    firehose_entries = sum([await log.client.xlen(keys.firehose) for keys in log.shards])
    await log.close()
    latencies = sorted(x for r in results for x in r["latencies"])
    cpu = {port: cpu_after[port] - cpu_before.get(port, 0.0) for port in cpu_after}
    positions = [e.position for e in seen]
    return {
        "shards": shards,
        "tails": tails,
        "wait_replicas": wait,
        "appends": appended,
        "appends_per_s": round(appended / elapsed),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
        "redis_cpu_us_per_append": round(sum(cpu.values()) / max(1, appended) * 1e6, 1),
        "tail_cpu_us_per_event": round(tail_cpu / max(1, appended * tails) * 1e6, 1),
        "redis_cpu_s_by_master": {port: round(s, 2) for port, s in cpu.items()},
        "tail_received": len(seen),
        "ticks_per_event": round((firehose_entries - appended) / max(1, appended), 3),
        "tail_in_order": positions == sorted(positions) and len(set(positions)) == len(positions),
        "topics_by_shard": [sum(1 for d in range(1000) if shard_of(f"d:{d}", shards) == s) for s in range(shards)],
    }


async def read_backlog(cluster: RedisCluster, shards: int, backlog: int) -> dict[str, Any]:
    """A reader's capacity with full batches: append `backlog` events first, then time one
    reader reading them all from the start of the firehose."""
    prefix = spread_prefix(cluster, shards, f"backlog{uuid.uuid4().hex[:6]}-")
    log = OwnRedisEventLog(cluster.url, prefix=prefix, retention_s=3600, shards=shards)
    await log.open()
    body = envelope_body("response_posted", discussion_id="d", user=None, payload={"text": BODY_TEXT})
    for start in range(0, backlog, 500):
        await asyncio.gather(*(log.append(f"d:{i % 1000}", "response_posted", body) for i in range(start, start + 500)))
    count = 0
    began, cpu = time.monotonic(), time.process_time()
    async for item in ShardedTail(log, start=ORIGIN).run():
        count += isinstance(item, Event)
        if count >= backlog:
            break
    elapsed, cpu = time.monotonic() - began, time.process_time() - cpu
    await log.close()
    return {
        "shards": shards,
        "backlog": backlog,
        "read_per_s": round(count / elapsed),
        "reader_cpu_us_per_event": round(cpu / count * 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default="1,2,3")
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--wait-replicas", type=int, default=0, help="PARLEY_LOG_WAIT_REPLICAS of the appenders")
    parser.add_argument("--backlog", type=int, default=50_000, help="events a reader reads from the start")
    parser.add_argument("--tails", default="1", help="log readers (one per server process), e.g. 1,4")
    options = parser.parse_args()
    rows = []
    backlogs = []
    with redis_cluster() as cluster:
        for shards in (int(s) for s in options.shards.split(",")):
            backlogs.append(asyncio.run(read_backlog(cluster, shards, options.backlog)))
        for tails in (int(t) for t in options.tails.split(",")):
            for shards in (int(s) for s in options.shards.split(",")):
                job = (
                    cluster,
                    shards,
                    options.processes,
                    options.concurrency,
                    options.duration_s,
                    tails,
                    options.wait_replicas,
                )
                rows.append(asyncio.run(measure(*job)))
    print(
        "| shards | readers | appends/s | append p50 / p99 ms | Redis CPU per append | reader CPU per event "
        "| ticks per event | reader got, in order |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['shards']} | {row['tails']} | {row['appends_per_s']:,} | {row['p50_ms']} / {row['p99_ms']} | "
            f"{row['redis_cpu_us_per_append']} µs | {row['tail_cpu_us_per_event']} µs | {row['ticks_per_event']} | "
            f"{row['tail_received']:,} of {row['appends']:,}, {row['tail_in_order']} |"
        )
    print("\n| shards | one reader, full batches: events/s | its CPU per event |")
    print("|---|---|---|")
    for row in backlogs:
        print(f"| {row['shards']} | {row['read_per_s']:,} | {row['reader_cpu_us_per_event']} µs |")
    for row in [*rows, *backlogs]:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
