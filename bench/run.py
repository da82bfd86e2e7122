"""Run one named workload against a freshly started server and print a table and a JSON line.

    python -m bench.run idle    [--backend embedded|redis] [--connections 1000,5000] [--idle-s 65]
    python -m bench.run latency [--backend …] [--connections 1000] [--rate 10] [--discussions 1]
    python -m bench.run seed    [--backend …] [--connections 10000] [--discussions 1000] [--rate 1000]
    python -m bench.run hot     [--backend …] [--connections 5000] [--start-rate 0.5]
    python -m bench.run herd    --backend redis [--connections 5000]
    python -m bench.run scale   --backend redis [--connections 5000]

`--workers separate` runs the journal workers in a `parley work` process of their own (pinned to
the client core, like the publisher) beside servers started with PARLEY_WORKERS=0: the servers'
CPU is then the fan-out's alone, and the worker's is its own column (`worker_cpu_pct`).

`--reference` repeats the workload on `bench/reference_server.py` in the same run, so each
figure is also a ratio to the ceiling measured minutes apart on the same machine.

The servers are started here as their own processes (`python -m app serve`, as in
`tests/support.py`), pinned to core 0; this process (the load generator) and the publisher
are pinned to core 1. Every loop is bounded in count and time.
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
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
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
    sign,
    workdir,
)
from bench.loadgen import LoadGen  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"
DELIVERY_P95_LIMIT_MS = 2_000.0


@dataclass
class Target:
    """The server(s) one workload runs against."""

    name: str  # "parley-embedded", "parley-redis", "reference"
    servers: list[ServerProcess]
    redis_url: str | None
    prefix: str
    worker: subprocess.Popen[bytes] | None = None  # `parley work` (--workers separate)

    @property
    def main(self) -> ServerProcess:
        return self.servers[0]

    @property
    def ports(self) -> list[int]:
        return [server.port for server in self.servers]


@contextlib.asynccontextmanager
async def started(args: argparse.Namespace, kind: str, processes: int = 1) -> AsyncIterator[Target]:
    with workdir() as path:
        prefix = f"bench-{secrets.token_hex(4)}"
        redis_url = args.redis_url if args.backend == "redis" else None
        env = {"PARLEY_HEARTBEAT_S": str(args.heartbeat_s)}
        if redis_url is not None:
            env |= {"REDIS_URL": redis_url, "PARLEY_REDIS_PREFIX": prefix}
        name = "reference" if kind == "reference" else f"parley-{args.backend}"
        separate = args.workers == "separate" and kind == "parley"
        if args.workers != "in-process" and kind == "parley":
            if redis_url is None:
                raise SystemExit(f"--workers {args.workers} needs --backend redis")
            env["PARLEY_WORKERS"] = "0"
        if args.profile and kind == "parley":
            # bench/profile_hook/sitecustomize.py: snapshots and profiles on signals, app untouched.
            env |= {
                "PYTHONPATH": f"{ROOT / 'bench' / 'profile_hook'}{os.pathsep}{ROOT}",
                "PARLEY_BENCH_PROFILE_DIR": str(RESULTS_DIR / f"profile-{args.workload}-{name}"),
            }
            if args.workload == "idle":
                env["PYTHONTRACEMALLOC"] = "1"  # memory only: tracing would distort CPU figures
        servers = []
        for index in range(processes):
            if args.cpu_quota is not None:
                # Servers of equal size, all on the server core (see CpuQuota): core 1 stays the client's.
                servers.append(ServerProcess(kind, free_port(), path, env, core=SERVER_CORE, cpu_quota=args.cpu_quota))
                continue
            # With two processes, each gets a core: the point of `scale` is one process per core.
            core = index % (os.cpu_count() or 1)
            servers.append(ServerProcess(kind, free_port(), path, env, core=core))
        worker: subprocess.Popen[bytes] | None = None
        try:
            for server in servers:
                await asyncio.to_thread(server.start)
                await wait_ready(server)
            if separate:
                worker = await asyncio.to_thread(start_worker, servers[0], path)
            yield Target(name, servers, redis_url, prefix, worker)
        finally:
            if worker is not None:
                await asyncio.to_thread(stop_worker, worker, path)
            if args.profile:
                # Let the hook finish its last snapshot (slow: it walks every traced block) or profile.
                await asyncio.sleep(60 if args.workload == "idle" else 15)
            for server in servers:
                if server.process is not None and server.process.poll() is not None:
                    print(f"server exited early:\n{server.log_tail()}", file=sys.stderr)
                await asyncio.to_thread(server.stop)
                # Keep the server's log: errors under load are findings.
                log = path / f"server-{server.port}.log"
                if log.exists():
                    (RESULTS_DIR / f"server-{name}-{server.port}.log").write_bytes(log.read_bytes())
            if redis_url is not None:
                await delete_keys(redis_url, prefix)


def start_worker(server: ServerProcess, path: Path, timeout_s: float = 30.0) -> subprocess.Popen[bytes]:
    """`parley work` with the server's environment, pinned to the client core; ready once it says so."""
    log_path = path / "worker.log"
    command = [sys.executable, "-m", "app", "work"]
    if shutil.which("taskset") and (os.cpu_count() or 1) > CLIENT_CORE:
        command = ["taskset", "-c", str(CLIENT_CORE), *command]
    with log_path.open("ab") as log:
        worker = subprocess.Popen(command, cwd=path, env=server.environment(), stdout=log, stderr=subprocess.STDOUT)
    for _ in range(int(timeout_s / 0.1)):
        if b"workers are running" in log_path.read_bytes():
            return worker
        if worker.poll() is not None:
            break
        time.sleep(0.1)
    worker.kill()
    raise RuntimeError(f"parley work did not start:\n{log_path.read_text(errors='replace')[-2000:]}")


def stop_worker(worker: subprocess.Popen[bytes], path: Path) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(15)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(5)
    log = path / "worker.log"
    if log.exists():
        (RESULTS_DIR / f"worker-{worker.pid}.log").write_bytes(log.read_bytes())


async def wait_ready(server: ServerProcess, timeout_s: float = 30.0) -> None:
    async with httpx.AsyncClient(timeout=2) as client:
        for _ in range(int(timeout_s / 0.1)):
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(server.url + "/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{server.url} never became ready")


async def delete_keys(redis_url: str, prefix: str) -> None:
    import redis.asyncio as redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start : start + 1000])
    finally:
        await client.aclose()


async def make_discussions(url: str, count: int) -> list[str]:
    headers = {"Authorization": "Bearer " + sign("bench-publisher")}
    limits = httpx.Limits(max_connections=8)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:
        semaphore = asyncio.Semaphore(8)

        async def one(index: int) -> str:
            async with semaphore:
                response = await client.post("/api/discussions", json={"title": f"bench {index}"})
                response.raise_for_status()
                return str(response.json()["id"])

        return list(await asyncio.gather(*(one(i) for i in range(count))))


async def warm_up(target: Target, discussions: list[str]) -> None:
    """Touch every code path once (imports, first queries, caches) before the RSS baseline."""
    gen = LoadGen("127.0.0.1", target.ports)
    await gen.connect(4, discussions[:1])
    await publish(target, discussions[:1], rate=5, duration_s=0.4, mode="api")
    await gen.drain({}, timeout_s=0.5)
    await gen.close()
    await asyncio.sleep(1.0)


async def publish(
    target: Target, discussions: list[str], *, rate: float, duration_s: float, mode: str, connections: int = 4
) -> dict[str, Any]:
    """Run bench/publisher.py as its own process (pinned to the client core) and return its JSON."""
    file = RESULTS_DIR / f"discussions-{os.getpid()}.json"
    file.write_text(json.dumps(discussions))
    command = [
        sys.executable,
        str(ROOT / "bench" / "publisher.py"),
        f"--mode={mode}",
        f"--url={target.main.url}",
        f"--redis-url={target.redis_url or ''}",
        f"--prefix={target.prefix}",
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
    if process.returncode != 0:
        raise RuntimeError(f"publisher failed ({process.returncode})")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def signal_profiler(args: argparse.Namespace, target: Target, signum: int) -> None:
    """With --profile: SIGUSR1 snapshots memory, SIGUSR2 starts/stops cProfile (profile_hook)."""
    if args.profile and target.name != "reference":
        os.kill(target.main.pid, signum)


def start_py_spy(args: argparse.Namespace, pid: int, name: str) -> subprocess.Popen[bytes] | None:
    """With --py-spy: sample the server (no instrumentation overhead) into a collapsed-stack file."""
    if not args.py_spy:
        return None
    out = RESULTS_DIR / f"py-spy-{name}-{pid}.txt"
    command = ["py-spy", "record", "--pid", str(pid), "--rate", "250", "--format", "raw", "--output", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_py_spy(sampler: subprocess.Popen[bytes] | None) -> None:
    if sampler is not None:
        sampler.send_signal(signal.SIGINT)
        sampler.wait(30)


def publish_mode(args: argparse.Namespace, target: Target) -> str:
    if args.publish != "api" and target.redis_url is None:
        raise SystemExit(f"--publish {args.publish} needs --backend redis")
    return args.publish if target.name != "reference" else "api"


# --- workloads ------------------------------------------------------------------------------


async def idle(args: argparse.Namespace, target: Target) -> list[dict[str, Any]]:
    discussions = await make_discussions(target.main.url, args.discussions or 100)
    await warm_up(target, discussions)
    pid = target.main.pid
    base = rss_bytes(pid)
    signal_profiler(args, target, signal.SIGUSR1)
    gen = LoadGen("127.0.0.1", target.ports)
    rows: list[dict[str, Any]] = []
    steps = [int(n) for n in str(args.connections or "1000,5000").split(",")]
    for step in steps:
        added = step - len(gen.clients)
        opened_before = gen.open_count
        cpu = CpuMeter(pid).start()
        sampler = start_py_spy(args, pid, f"idle-connect-{step}")
        connect_s = await gen.connect(added, discussions)
        cpu.stop()
        stop_py_spy(sampler)
        await asyncio.sleep(args.settle_s)  # let allocator and GC settle before sampling
        rss = rss_bytes(pid)
        signal_profiler(args, target, signal.SIGUSR1)
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
            }
        )
        print(fmt_table(rows[-1:], list(rows[-1])), flush=True)
    if args.idle_s > 0:
        bytes0 = gen.idle_bytes()
        cpu = CpuMeter(pid).start()
        await asyncio.sleep(args.idle_s)
        cpu.stop()
        per_min = (gen.idle_bytes() - bytes0) / max(1, gen.open_count) / (args.idle_s / 60)
        rows[-1]["idle_bytes_per_conn_min"] = round(per_min, 1)
        rows[-1]["idle_server_cpu_pct"] = round(cpu.share * 100, 2)
        rows[-1]["still_open"] = gen.open_count
    await gen.close()
    return rows


async def listen_and_publish(
    args: argparse.Namespace,
    target: Target,
    gen: LoadGen,
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
    worker_cpu = CpuMeter(target.worker.pid).start() if target.worker is not None else None
    client_cpu = CpuMeter(None).start()
    core0 = core_busy_seconds(SERVER_CORE)
    rss0 = rss_bytes(pid)
    signal_profiler(args, target, signal.SIGUSR2)
    sampler = start_py_spy(args, pid, f"{args.workload}-{rate:g}")
    result = await publish(
        target, discussions, rate=rate, duration_s=duration_s, mode=mode, connections=args.publish_connections
    )
    missing = await gen.drain(result["per_discussion"], before, timeout_s=args.drain_s)
    signal_profiler(args, target, signal.SIGUSR2)
    stop_py_spy(sampler)
    for meter in meters:
        meter.stop()
    if worker_cpu is not None:
        worker_cpu.stop()
    client_cpu.stop()
    listeners = {d: 0 for d in discussions}
    for client in gen.clients:
        listeners[client.discussion] = listeners.get(client.discussion, 0) + 1
    expected = sum(count * listeners.get(d, 0) for d, count in result["per_discussion"].items())
    delivered = sum(c.received for c in gen.clients) - sum(before.values())
    server_cpu = sum(meter.cpu_s for meter in meters)
    # Other work on the server's core (other engineers' tests share this 2-core machine).
    on_core0 = sum(
        meter.cpu_s for meter, server in zip(meters, target.servers, strict=True) if server.core == SERVER_CORE
    )
    core0_other = core_busy_seconds(SERVER_CORE) - core0 - on_core0
    percentiles = gen.hist.percentiles_ms()
    row = {
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
        "core0_other_pct": round(max(0.0, core0_other) / max(0.001, meters[0].wall_s) * 100, 1),
        "rss_mb": round(rss_bytes(pid) / 2**20, 1),
        "rss_growth_mb": round((rss_bytes(pid) - rss0) / 2**20, 1),
        "publish_mode": mode,
        "connect_failed": gen.totals.failed,
        "last_error": gen.last_error,
    }
    if worker_cpu is not None:  # `parley work`'s CPU, not in server_cpu_* (--workers separate)
        row["worker_cpu_pct"] = round(worker_cpu.share * 100, 1)
    return row


async def latency(args: argparse.Namespace, target: Target) -> list[dict[str, Any]]:
    discussions = await make_discussions(target.main.url, args.discussions or 1)
    await warm_up(target, discussions)
    gen = LoadGen("127.0.0.1", target.ports)
    connect_s = await gen.connect(int(args.connections or 1000), discussions)
    await asyncio.sleep(args.settle_s)
    row = await listen_and_publish(args, target, gen, discussions, rate=args.rate or 10, duration_s=args.duration_s)
    row["connect_all_s"] = round(connect_s, 2)
    await gen.close()
    return [row]


async def seed(args: argparse.Namespace, target: Target) -> list[dict[str, Any]]:
    discussions = await make_discussions(target.main.url, args.discussions or 1000)
    await warm_up(target, discussions)
    gen = LoadGen("127.0.0.1", target.ports)
    connect_s = await gen.connect(int(args.connections or 10_000), discussions)
    await asyncio.sleep(args.settle_s)
    row = await listen_and_publish(args, target, gen, discussions, rate=args.rate or 1000, duration_s=args.duration_s)
    row["connect_all_s"] = round(connect_s, 2)
    await gen.close()
    return [row]


async def hot(args: argparse.Namespace, target: Target) -> list[dict[str, Any]]:
    """Raise the rate to one discussion step by step until p95 passes 2 s or anything is lost."""
    discussions = await make_discussions(target.main.url, 1)
    await warm_up(target, discussions)
    gen = LoadGen("127.0.0.1", target.ports)
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
    """All clients connected; the server restarts; events are published while it is down; every
    client reconnects at once with its Last-Event-ID. Time until every client has everything."""
    if target.redis_url is None:
        raise SystemExit("herd needs --backend redis (an embedded log does not survive a restart)")
    discussions = await make_discussions(target.main.url, args.discussions or 100)
    await warm_up(target, discussions)
    gen = LoadGen("127.0.0.1", target.ports, retry_s=args.retry_ms / 1000)
    connect_s = await gen.connect(int(args.connections or 5000), discussions)
    published: dict[str, int] = {}

    def add(result: dict[str, Any]) -> None:
        for discussion, count in result["per_discussion"].items():
            published[discussion] = published.get(discussion, 0) + count

    add(await publish(target, discussions, rate=50, duration_s=2, mode="redis"))
    before_missing = await gen.drain(published, timeout_s=args.drain_s)
    server = target.main
    stop_started = time.monotonic()
    await asyncio.to_thread(server.stop, signal.SIGTERM)
    stop_s = time.monotonic() - stop_started
    # While it is down: events every client has missed and must get on resume.
    while_down = await publish(target, discussions, rate=100, duration_s=2, mode="redis")
    add(while_down)
    gen.totals.reconnects = 0
    dup0, ooo0 = gen.totals.duplicates, gen.totals.out_of_order
    other0 = gen.totals.other_events
    gen.other_types.clear()
    restart = time.monotonic()
    await asyncio.to_thread(server.start)
    listening_s = time.monotonic() - restart
    cpu = CpuMeter(server.pid).start()
    signal_profiler(args, target, signal.SIGUSR2)
    sampler = start_py_spy(args, server.pid, "herd")
    missing = math.inf
    resumed_s = math.inf
    for _ in range(int(args.drain_s * 20) + 600):  # bounded: drain_s + 30 s
        missing = gen.expected_shortfall(published)
        if missing == 0:
            resumed_s = time.monotonic() - restart
            break
        await asyncio.sleep(0.05)
    cpu.stop()
    signal_profiler(args, target, signal.SIGUSR2)
    stop_py_spy(sampler)
    row = {
        "server": target.name,
        "clients": len(gen.clients),
        "connect_all_s": round(connect_s, 2),
        "missing_before_restart": before_missing,
        "stop_s": round(stop_s, 2),
        "events_while_down": while_down["ok"],
        "listening_after_s": round(listening_s, 2),
        "all_resumed_after_s": round(resumed_s, 2),
        "reconnects": gen.totals.reconnects,
        "open": gen.open_count,
        "lost": missing,
        "duplicates": gen.totals.duplicates - dup0,
        "out_of_order": gen.totals.out_of_order - ooo0,
        "other_events_after_restart": gen.totals.other_events - other0,
        "other_types_after_restart": dict(gen.other_types),
        "failed": gen.totals.failed,
        "server_cpu_s_during_resume": round(cpu.cpu_s, 2),
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
    workload = WORKLOADS[args.workload]
    rows: list[dict[str, Any]] = []
    kinds = ["parley", "reference"] if args.reference else ["parley"]
    for kind in kinds:
        process_counts = [1, 2] if args.workload == "scale" and kind == "parley" else [1]
        for processes in process_counts:
            async with started(args, kind, processes) as target:
                rows += await workload(args, target)
    return rows


def ratios(rows: list[dict[str, Any]], workload: str) -> dict[str, float]:
    """Headline figure of each server over the reference's, when both ran."""
    reference = [r for r in rows if r["server"] == "reference"]
    parley = [r for r in rows if r["server"] != "reference"]
    if not reference or not parley:
        return {}
    if workload == "hot":
        best = max((r["deliveries_per_s"] for r in parley if r.get("ok")), default=0.0)
        ceiling = max((r["deliveries_per_s"] for r in reference if r.get("ok")), default=0.0)
        return {"hot_deliveries_ratio": round(best / ceiling, 3) if ceiling else math.nan}
    if workload == "idle":
        return {"rss_per_conn_ratio": round(parley[-1]["rss_kb_per_conn"] / reference[-1]["rss_kb_per_conn"], 2)}
    if workload in {"latency", "seed"}:
        return {
            "p95_ratio": round(parley[-1]["p95_ms"] / reference[-1]["p95_ms"], 2),
            "cpu_per_delivery_ratio": round(
                parley[-1]["server_cpu_us_per_delivery"] / reference[-1]["server_cpu_us_per_delivery"], 2
            ),
        }
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--backend", choices=["embedded", "redis"], default="embedded")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--connections", help="number of SSE clients (idle: comma-separated steps)")
    parser.add_argument("--discussions", type=int, help="discussions the clients spread over")
    parser.add_argument("--rate", type=float, help="responses per second")
    parser.add_argument("--duration-s", type=float, default=20.0, help="publishing time per measurement")
    parser.add_argument(
        "--publish",
        choices=["api", "redis", "redis-ephemeral"],
        default="api",
        help=(
            "publisher path: the REST API; the Redis log (append.lua, as the API's relay does: firehose, topic "
            "stream and journal); redis-ephemeral: the firehose only (as typing and presence are published), "
            "one stream as Socket.IO's adapter writes"
        ),
    )
    parser.add_argument("--publish-connections", type=int, default=4)
    parser.add_argument("--heartbeat-s", type=float, default=30.0)
    parser.add_argument("--idle-s", type=float, default=65.0, help="idle window for bytes/connection/min")
    parser.add_argument("--settle-s", type=float, default=3.0)
    parser.add_argument("--drain-s", type=float, default=15.0)
    parser.add_argument("--start-rate", type=float, default=0.5, help="hot: first rate")
    parser.add_argument("--step", type=float, default=1.5, help="hot: rate multiplier per step")
    parser.add_argument("--max-steps", type=int, default=14)
    parser.add_argument("--retry-ms", type=float, default=200.0, help="herd: client reconnect delay")
    parser.add_argument(
        "--workers",
        choices=["in-process", "separate", "none"],
        default="in-process",
        help=(
            "separate: the journal workers in a `parley work` process (client core), servers with PARLEY_WORKERS=0; "
            "none: no journal workers at all (fan-out only, the work Socket.IO's server does)"
        ),
    )
    parser.add_argument("--reference", action="store_true", help="also run on bench/reference_server.py")
    parser.add_argument("--profile", action="store_true", help="tracemalloc (idle) or cProfile the server")
    parser.add_argument(
        "--cpu-quota", type=float, help="cap each server process at this fraction of a core (cgroup; for scale)"
    )
    parser.add_argument(
        "--py-spy",
        action="store_true",
        help="sample the server with py-spy while measuring (herd: the restarted server)",
    )
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
    summary = {"workload": args.workload, "backend": args.backend, "at": started_at, "args": vars(args), "rows": rows}
    summary |= {"ratios": ratios(rows, args.workload)}
    if summary["ratios"]:
        print("ratios to the reference server:", summary["ratios"])
    line = json.dumps(summary, default=str)
    with (RESULTS_DIR / "results.jsonl").open("a") as out:
        out.write(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
