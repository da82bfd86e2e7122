"""Run one workload against Socket.IO 4 on Node.js (bench/socketio/server.js) and print a table and a JSON line.

    python -m bench.sio_run idle    [--backend embedded|redis] [--connections 1000,5000] [--idle-s 65]
    python -m bench.sio_run latency [--backend …] [--connections 1000] [--rate 10] [--discussions 1]
    python -m bench.sio_run seed    [--backend …] [--connections 10000] [--discussions 1000] [--rate 1000]
    python -m bench.sio_run hot     [--backend …] [--connections 5000] [--start-rate 0.5]
    python -m bench.sio_run herd    --backend redis [--connections 5000] [--discussions 100]
    python -m bench.sio_run scale   --backend redis [--connections 5000]

The peer comparison the capacity issue asks for: same workloads, same columns, same machine and
method as bench/run.py. `--backend redis` uses @socket.io/redis-streams-adapter (a fresh stream
and key prefix per run, deleted after); `embedded` the in-memory adapter. Node is pinned to core
0, this process (the Socket.IO load client, bench/socketio/loadgen.py) and the publisher
(bench/socketio/publisher.py) to core 1. Needs `cd bench/socketio && npm ci` once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    BENCH_JWT_SECRET,
    CLIENT_CORE,
    SERVER_CORE,
    CpuMeter,
    ServerProcess,
    core_busy_seconds,
    fmt_table,
    free_port,
    pin_to,
    raise_fd_limit,
    rss_bytes,
    run_async,
    workdir,
)
from bench.socketio.loadgen import SioLoadGen  # noqa: E402

SIO_DIR = ROOT / "bench" / "socketio"
RESULTS_DIR = ROOT / "bench" / "results"
DELIVERY_P95_LIMIT_MS = 2_000.0
CLIENT_BOUND_SHARE = 0.8


class NodeServer(ServerProcess):
    """bench/socketio/server.js on a port of its own (same start/stop/log handling as Parley's)."""

    def command(self) -> list[str]:
        node = shutil.which("node") or "node"
        # --expose-gc changes nothing by itself; it lets `idle` sample RSS after a full collection too.
        command = [node, "--expose-gc", str(SIO_DIR / "server.js")]
        if self.core is not None and shutil.which("taskset") and self.core < (os.cpu_count() or 1):
            command = ["taskset", "-c", str(self.core), *command]
        return command

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PARLEY_", "SIO_")) and k != "REDIS_URL"}
        env.update(PORT=str(self.port), HOST="127.0.0.1", JWT_SECRET=BENCH_JWT_SECRET, NODE_ENV="production")
        env.update(self.env_overrides)
        return env


@dataclass
class Target:
    name: str  # "socketio-embedded", "socketio-redis"
    servers: list[ServerProcess]
    redis_url: str | None
    prefix: str
    maxlen: int

    @property
    def main(self) -> ServerProcess:
        return self.servers[0]

    @property
    def ports(self) -> list[int]:
        return [server.port for server in self.servers]

    @property
    def stream(self) -> str:
        return f"{self.prefix}:stream"


@contextlib.asynccontextmanager
async def started(args: argparse.Namespace, processes: int = 1) -> AsyncIterator[Target]:
    if not (SIO_DIR / "node_modules" / "socket.io").is_dir():
        raise SystemExit("bench/socketio/node_modules is missing: run `cd bench/socketio && npm ci` first")
    with workdir() as path:
        prefix = f"bench-sio-{secrets.token_hex(4)}"
        redis_url = args.redis_url if args.backend == "redis" else None
        env = {
            "SIO_PING_INTERVAL_MS": str(int(args.ping_interval_s * 1000)),
            "SIO_RECOVERY_MS": str(int(args.recovery_s * 1000)),
        }
        if redis_url is not None:
            env |= {"REDIS_URL": redis_url, "SIO_PREFIX": prefix, "SIO_MAXLEN": str(args.maxlen)}
        servers: list[ServerProcess] = []
        for index in range(processes):
            if args.cpu_quota is not None:
                # As bench/run.py: servers of equal size, all on the server core (bench.common.CpuQuota).
                servers.append(
                    NodeServer("socketio", free_port(), path, env, core=SERVER_CORE, cpu_quota=args.cpu_quota)
                )
                continue
            core = index % (os.cpu_count() or 1)  # as bench/run.py: one process per core for `scale`
            servers.append(NodeServer("socketio", free_port(), path, env, core=core))
        try:
            for server in servers:
                await asyncio.to_thread(server.start)
                await wait_ready(server)
            yield Target(f"socketio-{args.backend}", servers, redis_url, prefix, args.maxlen)
        finally:
            for server in servers:
                if server.process is not None and server.process.poll() is not None:
                    print(f"server exited early:\n{server.log_tail()}", file=sys.stderr)
                await asyncio.to_thread(server.stop)
                log = path / f"server-{server.port}.log"
                if log.exists():
                    (RESULTS_DIR / f"server-socketio-{args.backend}-{server.port}.log").write_bytes(log.read_bytes())
            if redis_url is not None:
                await delete_keys(redis_url, prefix)


async def wait_ready(server: ServerProcess, timeout_s: float = 30.0) -> None:
    async with httpx.AsyncClient(timeout=2) as client:
        for _ in range(int(timeout_s / 0.1)):
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(server.url + "/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{server.url} never became ready")


async def full_gc(server: ServerProcess) -> int:
    """Ask Node for a full collection (POST /gc), give the allocator a moment to return pages, and
    return the live V8 heap plus external memory (bytes) right after the collection."""
    live = 0
    async with httpx.AsyncClient(timeout=30) as client:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            memory = (await client.post(server.url + "/gc")).json()
            live = int(memory["heapUsed"]) + int(memory["external"])
    await asyncio.sleep(1.0)
    return live


async def delete_keys(redis_url: str, prefix: str) -> None:
    import redis.asyncio as redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start : start + 1000])
    finally:
        await client.aclose()


def make_discussions(count: int) -> list[str]:
    """Socket.IO has no discussions to create: a room exists once someone joins it. UUIDs, as Parley's."""
    return [str(uuid.uuid4()) for _ in range(count)]


def new_gen(target: Target, retry_s: float | None = None) -> SioLoadGen:
    # Redis stream ids order events; the in-memory adapter's offsets are random, so use the server's seq.
    return SioLoadGen("127.0.0.1", target.ports, retry_s=retry_s, order_by_offset=target.redis_url is not None)


async def warm_up(args: argparse.Namespace, target: Target, discussions: list[str]) -> None:
    """Touch every code path once (JIT, first emits, Redis) before the RSS baseline."""
    gen = new_gen(target)
    await gen.connect(4, discussions[:1])
    await publish(args, target, discussions[:1], rate=5, duration_s=0.4, mode="api")
    await gen.drain({}, timeout_s=0.5)
    await gen.close()
    await asyncio.sleep(1.0)


async def publish(
    args: argparse.Namespace,
    target: Target,
    discussions: list[str],
    *,
    rate: float,
    duration_s: float,
    mode: str,
    connections: int = 4,
) -> dict[str, Any]:
    """Run bench/socketio/publisher.py as its own process (pinned to the client core); its JSON."""
    file = RESULTS_DIR / f"sio-discussions-{os.getpid()}.json"
    file.write_text(json.dumps(discussions))
    command = [
        sys.executable,
        str(SIO_DIR / "publisher.py"),
        f"--mode={mode}",
        f"--url={target.main.url}",
        f"--redis-url={target.redis_url or ''}",
        f"--stream={target.stream}",
        f"--maxlen={target.maxlen}",
        f"--discussions-file={file}",
        f"--rate={rate}",
        f"--duration-s={duration_s}",
        f"--connections={connections}",
    ]
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(duration_s * 5 + 90):
            out, _ = await process.communicate()
    finally:
        file.unlink(missing_ok=True)
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"publisher failed ({process.returncode})")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def publish_mode(args: argparse.Namespace, target: Target) -> str:
    if args.publish == "redis" and target.redis_url is None:
        raise SystemExit("--publish redis needs --backend redis")
    return str(args.publish)


# --- workloads ------------------------------------------------------------------------------


async def idle(args: argparse.Namespace, target: Target) -> list[dict[str, Any]]:
    discussions = make_discussions(args.discussions or 100)
    await warm_up(args, target, discussions)
    pid = target.main.pid
    # V8 frees on its own schedule, so the baseline is taken after a full GC; each step's RSS is
    # sampled as for Parley (`rss_kb_per_conn`: what the process holds, garbage included) and again
    # after a forced full GC (`rss_gc_kb_per_conn`: live memory per connection).
    heap_base = await full_gc(target.main)
    base = rss_bytes(pid)
    gen = new_gen(target)
    rows: list[dict[str, Any]] = []
    steps = [int(n) for n in str(args.connections or "1000,5000").split(",")]
    for step in steps:
        added = step - len(gen.clients)
        opened_before = gen.open_count
        cpu = CpuMeter(pid).start()
        connect_s = await gen.connect(added, discussions)
        cpu.stop()
        await asyncio.sleep(args.settle_s)
        rss = rss_bytes(pid)
        heap = await full_gc(target.main)
        rss_gc = rss_bytes(pid)
        rows.append(
            {
                "server": target.name,
                "connections": gen.open_count,
                "failed": gen.totals.failed,
                "last_error": gen.last_error,
                "connect_all_s": round(connect_s, 2),
                "connects_per_s": round((gen.open_count - opened_before) / connect_s, 1),
                "server_cpu_ms_per_connect": round(cpu.cpu_s * 1000 / max(1, added), 3),
                "rss_base_mb": round(base / 2**20, 1),
                "rss_mb": round(rss / 2**20, 1),
                "rss_kb_per_conn": round((rss - base) / max(1, gen.open_count) / 1024, 2),
                "rss_gc_mb": round(rss_gc / 2**20, 1),
                "rss_gc_kb_per_conn": round((rss_gc - base) / max(1, gen.open_count) / 1024, 2),
                # V8 heap + external (buffers) after a full GC: live memory, independent of RSS.
                "heap_kb_per_conn": round((heap - heap_base) / max(1, gen.open_count) / 1024, 2),
            }
        )
        print(fmt_table(rows[-1:], list(rows[-1])), flush=True)
    if args.idle_s > 0:
        bytes0, sent0, pings0 = gen.idle_bytes(), gen.idle_bytes_sent(), gen.totals.pings
        cpu = CpuMeter(pid).start()
        await asyncio.sleep(args.idle_s)
        cpu.stop()
        minutes = args.idle_s / 60
        conns = max(1, gen.open_count)
        # Received bytes, WebSocket framing included (Parley's column counts chunk framing);
        # the client's pongs, which SSE does not need, are in the `sent` column.
        rows[-1]["idle_bytes_per_conn_min"] = round((gen.idle_bytes() - bytes0) / conns / minutes, 1)
        rows[-1]["idle_bytes_sent_per_conn_min"] = round((gen.idle_bytes_sent() - sent0) / conns / minutes, 1)
        rows[-1]["pings_per_conn"] = round((gen.totals.pings - pings0) / conns, 2)
        rows[-1]["idle_server_cpu_pct"] = round(cpu.share * 100, 2)
        rows[-1]["still_open"] = gen.open_count
        rss_idle = rss_bytes(pid)
        rows[-1]["rss_after_idle_mb"] = round(rss_idle / 2**20, 1)
        rows[-1]["rss_after_idle_kb_per_conn"] = round((rss_idle - base) / conns / 1024, 2)
    await gen.close()
    return rows


async def listen_and_publish(
    args: argparse.Namespace,
    target: Target,
    gen: SioLoadGen,
    discussions: list[str],
    *,
    rate: float,
    duration_s: float,
) -> dict[str, Any]:
    """One measured interval: publish at `rate` for `duration_s`, drain, and summarise."""
    pid = target.main.pid
    mode = publish_mode(args, target)
    gen.hist.reset()
    before = gen.received_by_client()
    ended0, dup0, ooo0 = gen.totals.ended_by_server, gen.totals.duplicates, gen.totals.out_of_order
    meters = [CpuMeter(server.pid).start() for server in target.servers]
    client_cpu = CpuMeter(None).start()
    core0 = core_busy_seconds(SERVER_CORE)
    rss0 = rss_bytes(pid)
    result = await publish(
        args, target, discussions, rate=rate, duration_s=duration_s, mode=mode, connections=args.publish_connections
    )
    missing = await gen.drain(result["per_discussion"], before, timeout_s=args.drain_s)
    for meter in meters:
        meter.stop()
    client_cpu.stop()
    listeners = {d: 0 for d in discussions}
    for client in gen.clients:
        listeners[client.discussion] = listeners.get(client.discussion, 0) + 1
    expected = sum(count * listeners.get(d, 0) for d, count in result["per_discussion"].items())
    delivered = sum(c.received for c in gen.clients) - sum(before.values())
    server_cpu = sum(meter.cpu_s for meter in meters)
    core0_other = core_busy_seconds(SERVER_CORE) - core0 - meters[0].cpu_s
    percentiles = gen.hist.percentiles_ms()
    return {
        "server": target.name,
        "listeners": len(gen.clients),
        "open": gen.open_count,
        "rate_target": rate,
        "rate_achieved": result["achieved_rate"],
        "publish_errors": result["errors"],
        "publish_unsent": result["unsent"],
        "published": result["ok"],
        "deliveries_expected": expected,
        "delivered": delivered,
        "deliveries_per_s": round(delivered / max(0.001, meters[0].wall_s), 1),
        "p50_ms": percentiles["p50"],
        "p95_ms": percentiles["p95"],
        "p99_ms": percentiles["p99"],
        "max_ms": percentiles["max"],
        "lost": missing,
        "duplicates": gen.totals.duplicates - dup0,
        "out_of_order": gen.totals.out_of_order - ooo0,
        "dropped_by_server": gen.totals.ended_by_server - ended0,
        "server_cpu_pct": round(server_cpu / max(0.001, meters[0].wall_s) * 100, 1),
        "server_cpu_us_per_delivery": round(server_cpu * 1e6 / max(1, delivered), 1),
        "client_cpu_pct": round(client_cpu.share * 100, 1),
        # Past ~80 % of its core the load client, not the server, may be what limits the row.
        "client_bound": client_cpu.share >= CLIENT_BOUND_SHARE,
        "core0_other_pct": round(max(0.0, core0_other) / max(0.001, meters[0].wall_s) * 100, 1),
        "rss_mb": round(rss_bytes(pid) / 2**20, 1),
        "rss_growth_mb": round((rss_bytes(pid) - rss0) / 2**20, 1),
        "publish_mode": mode,
        "connect_failed": gen.totals.failed,
        "last_error": gen.last_error,
    }


async def latency(args: argparse.Namespace, target: Target) -> list[dict[str, Any]]:
    discussions = make_discussions(args.discussions or 1)
    await warm_up(args, target, discussions)
    gen = new_gen(target)
    connect_s = await gen.connect(int(args.connections or 1000), discussions)
    await asyncio.sleep(args.settle_s)
    row = await listen_and_publish(args, target, gen, discussions, rate=args.rate or 10, duration_s=args.duration_s)
    row["connect_all_s"] = round(connect_s, 2)
    await gen.close()
    return [row]


async def seed(args: argparse.Namespace, target: Target) -> list[dict[str, Any]]:
    discussions = make_discussions(args.discussions or 1000)
    await warm_up(args, target, discussions)
    gen = new_gen(target)
    connect_s = await gen.connect(int(args.connections or 10_000), discussions)
    await asyncio.sleep(args.settle_s)
    row = await listen_and_publish(args, target, gen, discussions, rate=args.rate or 1000, duration_s=args.duration_s)
    row["connect_all_s"] = round(connect_s, 2)
    await gen.close()
    return [row]


async def hot(args: argparse.Namespace, target: Target) -> list[dict[str, Any]]:
    """Raise the rate to one room step by step until p95 passes 2 s or anything is lost."""
    discussions = make_discussions(1)
    await warm_up(args, target, discussions)
    gen = new_gen(target)
    await gen.connect(int(args.connections or 5000), discussions)
    await asyncio.sleep(args.settle_s)
    rows: list[dict[str, Any]] = []
    rate = args.start_rate
    for _step in range(args.max_steps):
        row = await listen_and_publish(args, target, gen, discussions, rate=round(rate, 2), duration_s=args.duration_s)
        row["ok"] = row["p95_ms"] < DELIVERY_P95_LIMIT_MS and row["lost"] == 0 and row["dropped_by_server"] == 0
        rows.append(row)
        print(fmt_table(rows[-1:], HOT_COLUMNS), flush=True)
        if not row["ok"]:
            break
        rate *= args.step
    await gen.close()
    best = max((r for r in rows if r["ok"]), key=lambda r: r["deliveries_per_s"], default=None)
    for row in rows:
        row["best"] = row is best
    return rows


async def scale(args: argparse.Namespace, target: Target) -> list[dict[str, Any]]:
    rows = await hot(args, target)
    for row in rows:
        row["processes"] = len(target.servers)
    return rows


async def herd(args: argparse.Namespace, target: Target) -> list[dict[str, Any]]:
    """All clients connected; SIGTERM the server (sessions persisted to Redis); events are XADDed to
    the adapter's stream while it is down; restart; every client reconnects at once with its pid and
    last offset (connection state recovery). Time until every client has every event."""
    if target.redis_url is None:
        raise SystemExit("herd needs --backend redis (the in-memory adapter's sessions die with the process)")
    discussions = make_discussions(args.discussions or 100)
    await warm_up(args, target, discussions)
    gen = new_gen(target, retry_s=args.retry_ms / 1000)
    connect_s = await gen.connect(int(args.connections or 5000), discussions)
    published: dict[str, int] = {}

    def add(result: dict[str, Any]) -> None:
        for discussion, count in result["per_discussion"].items():
            published[discussion] = published.get(discussion, 0) + count

    # Before: at least one event per room, so every client has an offset to resume from
    # (socket.io-client sends no offset, hence gets no recovery, until it has received an event).
    before_rate = max(50.0, len(discussions) / 2)
    add(await publish(args, target, discussions, rate=before_rate, duration_s=2, mode="redis"))
    before_missing = await gen.drain(published, timeout_s=args.drain_s)
    without_offset = sum(1 for c in gen.clients if c.offset is None)
    server = target.main
    stop_started = time.monotonic()
    await asyncio.to_thread(server.stop, signal.SIGTERM)
    stop_s = time.monotonic() - stop_started
    # While it is down: straight into the adapter's stream (the format a live server would XADD).
    while_down = await publish(args, target, discussions, rate=100, duration_s=2, mode="redis")
    add(while_down)
    gen.totals.reconnects = 0
    gen.totals.recovered = gen.totals.not_recovered = 0
    dup0, ooo0 = gen.totals.duplicates, gen.totals.out_of_order
    restart = time.monotonic()
    await asyncio.to_thread(server.start)
    listening_s = time.monotonic() - restart
    cpu = CpuMeter(server.pid).start()
    missing = math.inf
    resumed_s = math.inf
    all_reconnected_s = math.inf
    for _ in range(int(args.drain_s * 20) + 600):  # bounded: drain_s + 30 s
        if all_reconnected_s == math.inf and gen.open_count >= len(gen.clients) - gen.totals.failed:
            all_reconnected_s = time.monotonic() - restart
        missing = gen.expected_shortfall(published)
        if missing == 0 and all_reconnected_s != math.inf:
            resumed_s = time.monotonic() - restart
            break
        await asyncio.sleep(0.05)
    cpu.stop()
    row = {
        "server": target.name,
        "clients": len(gen.clients),
        "connect_all_s": round(connect_s, 2),
        "missing_before_restart": before_missing,
        "without_offset": without_offset,
        "stop_s": round(stop_s, 2),
        "events_while_down": while_down["ok"],
        "listening_after_s": round(listening_s, 2),
        "all_reconnected_after_s": round(all_reconnected_s, 2),
        "all_resumed_after_s": round(resumed_s, 2),
        "reconnects": gen.totals.reconnects,
        "recovered": gen.totals.recovered,
        "not_recovered": gen.totals.not_recovered,
        "open": gen.open_count,
        "lost": missing,
        "duplicates": gen.totals.duplicates - dup0,
        "out_of_order": gen.totals.out_of_order - ooo0,
        "connect_errors": gen.totals.connect_errors,
        "failed": gen.totals.failed,
        "server_cpu_s_during_resume": round(cpu.cpu_s, 2),
        "rss_mb_after_resume": round(rss_bytes(server.pid) / 2**20, 1),
    }
    await gen.close()
    return [row]


HOT_COLUMNS = [
    "server",
    "rate_target",
    "rate_achieved",
    "deliveries_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "lost",
    "duplicates",
    "dropped_by_server",
    "server_cpu_pct",
    "server_cpu_us_per_delivery",
    "client_cpu_pct",
    "core0_other_pct",
]
WORKLOADS = {"idle": idle, "latency": latency, "seed": seed, "hot": hot, "herd": herd, "scale": scale}


async def run_workload(args: argparse.Namespace) -> list[dict[str, Any]]:
    RESULTS_DIR.mkdir(exist_ok=True)
    if args.workload == "scale" and args.backend != "redis":
        raise SystemExit("scale needs --backend redis (two processes share rooms through the adapter)")
    workload = WORKLOADS[args.workload]
    rows: list[dict[str, Any]] = []
    process_counts = [int(n) for n in args.processes.split(",")] if args.workload == "scale" else [1]
    for processes in process_counts:
        async with started(args, processes) as target:
            rows += await workload(args, target)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--backend", choices=["embedded", "redis"], default="embedded")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--connections", help="number of Socket.IO clients (idle: comma-separated steps)")
    parser.add_argument("--discussions", type=int, help="rooms the clients spread over")
    parser.add_argument("--rate", type=float, help="events per second")
    parser.add_argument("--duration-s", type=float, default=20.0, help="publishing time per measurement")
    parser.add_argument(
        "--publish", choices=["api", "redis"], default="api", help="POST /publish, or XADD into the adapter's stream"
    )
    parser.add_argument("--publish-connections", type=int, default=4)
    parser.add_argument("--ping-interval-s", type=float, default=25.0, help="Engine.IO pingInterval (default 25 s)")
    parser.add_argument(
        "--recovery-s", type=float, default=120.0, help="connectionStateRecovery maxDisconnectionDuration"
    )
    parser.add_argument("--maxlen", type=int, default=100_000, help="Redis stream MAXLEN ~ (adapter option)")
    parser.add_argument("--idle-s", type=float, default=65.0, help="idle window for bytes/connection/min")
    parser.add_argument("--settle-s", type=float, default=3.0)
    parser.add_argument("--drain-s", type=float, default=15.0)
    parser.add_argument("--start-rate", type=float, default=0.5, help="hot: first rate")
    parser.add_argument("--step", type=float, default=1.5, help="hot: rate multiplier per step")
    parser.add_argument("--max-steps", type=int, default=14)
    parser.add_argument("--processes", default="1,2", help="scale: process counts to run hot on")
    parser.add_argument(
        "--cpu-quota", type=float, help="cap each server process at this fraction of a core (cgroup; for scale)"
    )
    parser.add_argument("--retry-ms", type=float, default=200.0, help="herd: client reconnect delay")
    args = parser.parse_args()
    raise_fd_limit()
    pin_to(CLIENT_CORE)
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rows = run_async(run_workload(args))
    columns = list(dict.fromkeys(key for row in rows for key in row))
    if args.workload in {"hot", "scale"}:
        columns = ["processes", *HOT_COLUMNS, "ok", "best"] if args.workload == "scale" else [*HOT_COLUMNS, "ok"]
    print()
    print(fmt_table(rows, columns))
    summary = {
        "workload": args.workload,
        "backend": args.backend,
        "server": f"socketio-{args.backend}",
        "at": started_at,
        "versions": versions(),
        "args": vars(args),
        "rows": rows,
    }
    line = json.dumps(summary, default=str)
    with (RESULTS_DIR / "results.jsonl").open("a") as out:
        out.write(line + "\n")
    print(line)


def versions() -> dict[str, str]:
    """Node and package versions actually installed, for the record."""
    found: dict[str, str] = {}
    with contextlib.suppress(OSError):
        import subprocess

        found["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    for package in ("socket.io", "@socket.io/redis-streams-adapter", "redis", "jsonwebtoken"):
        with contextlib.suppress(OSError, ValueError):
            meta = json.loads((SIO_DIR / "node_modules" / package / "package.json").read_text())
            found[package] = str(meta["version"])
    return found


if __name__ == "__main__":
    main()
