"""Quick before/after figures for the lean stream path (issue 4, item 3); not the bench suite.

    python bench/lean_capacity.py idle --path lean --connections 20000
    python bench/lean_capacity.py fanout --path hypercorn --listeners 1000 --rate 100 --seconds 10

Starts a real server (`python -m app serve`, embedded log) pinned to CPU 0, and runs the load
client here on CPU 1 (uvloop, raw asyncio Protocols; one token per user, users spread over the
connections).
- idle: RSS growth of the server process per open, idle SSE connection (VmRSS from /proc).
- fanout: N listeners of one discussion, events posted through the API at a fixed rate; server
  CPU per delivery = (CPU with listeners - CPU for the same posts with no listener) / deliveries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support import Server, bearer, free_port, server_env, sign, wait_for_port

MARKER = b"event: response_posted"
OPEN_CONCURRENCY = 100
CLIENT_CPU = 1
SERVER_CPU = 0


class Listener(asyncio.Protocol):
    def __init__(self, request: bytes, opened: asyncio.Future[None]) -> None:
        self.request = request
        self.opened = opened
        self.received = 0
        self.tail = b""
        self.head = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if not self.opened.done():
            self.head += data
            if b": connected" in self.head:
                if not self.head.startswith(b"HTTP/1.1 200"):
                    self.opened.set_exception(RuntimeError(self.head[:200].decode(errors="replace")))
                else:
                    self.opened.set_result(None)
            return
        window = self.tail + data
        self.received += window.count(MARKER)
        self.tail = window[-(len(MARKER) - 1) :]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before the stream opened: {self.head[:300]!r}"))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def open_listeners(server: Server, discussion: str, count: int, users: int) -> list[Listener]:
    loop = asyncio.get_running_loop()
    tokens = [sign(f"user{i}") for i in range(min(users, count))]
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    listeners: list[Listener] = []

    async def one(i: int) -> None:
        async with gate:
            request = (
                f"GET /stream?discussion={discussion} HTTP/1.1\r\nHost: bench\r\n"
                f"Authorization: Bearer {tokens[i % len(tokens)]}\r\n\r\n"
            ).encode()
            opened: asyncio.Future[None] = loop.create_future()
            _, listener = await loop.create_connection(lambda: Listener(request, opened), "127.0.0.1", server.port)
            await opened
            listeners.append(listener)

    await asyncio.gather(*(one(i) for i in range(count)))
    return listeners


def close_all(listeners: list[Listener]) -> None:
    for listener in listeners:
        if listener.transport is not None:
            listener.transport.close()


async def make_discussion(server: Server) -> tuple[str, str]:
    token = sign("bench-author")
    async with httpx.AsyncClient(timeout=60) as client:
        r = await client.post(server.url + "/api/discussions", json={"title": "bench"}, headers=bearer(token))
        r.raise_for_status()
        return str(r.json()["id"]), token


async def idle(server: Server, pid: int, args: argparse.Namespace) -> dict[str, float]:
    discussion, _ = await make_discussion(server)
    close_all(await open_listeners(server, discussion, 200, args.users))  # warm-up: imports, caches
    await asyncio.sleep(2)
    before, cpu0 = rss_kb(pid), cpu_s(pid)
    started = time.monotonic()
    listeners = await open_listeners(server, discussion, args.connections, args.users)
    connect_s, connect_cpu_s = time.monotonic() - started, cpu_s(pid) - cpu0
    await asyncio.sleep(3)
    after = rss_kb(pid)
    close_all(listeners)
    return {
        "connections": len(listeners),
        "rss_before_kb": before,
        "rss_after_kb": after,
        "rss_per_connection_kb": round((after - before) / len(listeners), 2),
        "connect_s": round(connect_s, 1),
        "server_cpu_ms_per_open": round(connect_cpu_s / len(listeners) * 1000, 3),
    }


async def post_at_rate(server: Server, discussion: str, token: str, rate: float, seconds: float) -> int:
    body = {"body": "x" * 200}
    url = f"{server.url}/api/discussions/{discussion}/responses"
    sent = 0
    async with httpx.AsyncClient(headers=bearer(token), timeout=30) as client:
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(elapsed * rate) + 1
            while sent < due:
                (await client.post(url, json=body)).raise_for_status()
                sent += 1
            await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))
    return sent


async def fanout(server: Server, pid: int, args: argparse.Namespace) -> dict[str, float]:
    discussion, token = await make_discussion(server)
    await post_at_rate(server, discussion, token, args.rate, 1)  # warm-up
    cpu0 = cpu_s(pid)
    posted0 = await post_at_rate(server, discussion, token, args.rate, args.seconds)
    cpu_posting = cpu_s(pid) - cpu0
    listeners = await open_listeners(server, discussion, args.listeners, args.users)
    await asyncio.sleep(1)
    cpu1, wall1 = cpu_s(pid), time.monotonic()
    posted = await post_at_rate(server, discussion, token, args.rate, args.seconds)
    expected = posted * len(listeners)
    deadline = time.monotonic() + 30
    while sum(x.received for x in listeners) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    cpu_total, wall = cpu_s(pid) - cpu1, time.monotonic() - wall1
    delivered = sum(x.received for x in listeners)
    close_all(listeners)
    cpu_delivery = cpu_total - cpu_posting * posted / max(posted0, 1)
    return {
        "listeners": len(listeners),
        "events_posted": posted,
        "deliveries": delivered,
        "deliveries_expected": expected,
        "wall_s_until_all_delivered": round(wall, 2),
        "server_cpu_s": round(cpu_total, 2),
        "server_cpu_s_posting_only": round(cpu_posting, 2),
        "cpu_us_per_delivery": round(cpu_delivery / max(delivered, 1) * 1e6, 2),
        "deliveries_per_cpu_s": round(delivered / max(cpu_delivery, 1e-9)),
    }


async def fanout_reference(port: int, pid: int, args: argparse.Namespace) -> dict[str, float]:
    """The same listeners on `lean_reference.py`, which emits `--rate` events/s by itself."""
    server = Server(port, {}, Path("."))  # only .port is used by open_listeners
    listeners = await open_listeners(server, "-", args.listeners, args.users)
    await asyncio.sleep(1)
    received0, cpu0 = sum(x.received for x in listeners), cpu_s(pid)
    await asyncio.sleep(args.seconds)
    delivered, cpu = sum(x.received for x in listeners) - received0, cpu_s(pid) - cpu0
    close_all(listeners)
    return {
        "listeners": len(listeners),
        "deliveries": delivered,
        "server_cpu_s": round(cpu, 2),
        "cpu_us_per_delivery": round(cpu / max(delivered, 1) * 1e6, 2),
        "deliveries_per_cpu_s": round(delivered / max(cpu, 1e-9)),
    }


def run_reference(args: argparse.Namespace) -> dict[str, float]:
    port = free_port()
    script = Path(__file__).resolve().parent / "lean_reference.py"
    process = subprocess.Popen([sys.executable, str(script), str(port), str(args.rate)])
    try:
        wait_for_port(port, process=process)
        os.sched_setaffinity(process.pid, {SERVER_CPU})
        return uvloop.run(fanout_reference(port, process.pid, args))
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", choices=["idle", "fanout"])
    parser.add_argument("--path", choices=["lean", "hypercorn", "reference"], default="lean")
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--listeners", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=1000)
    args = parser.parse_args()
    # As many sockets as this container allows on each side (the server inherits the limit).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.sched_setaffinity(0, {CLIENT_CPU})
    if args.path == "reference":
        if args.workload != "fanout":
            parser.error("the reference server only runs the fanout workload")
        print(json.dumps({"workload": args.workload, "path": args.path, **run_reference(args)}))
        return
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        env = server_env(
            Path(workdir),
            port,
            PARLEY_LEAN_STREAM="1" if args.path == "lean" else "0",
            PARLEY_RATE_LIMIT_PER_MIN="100000000",
            PARLEY_CONNECT_LIMIT_PER_MIN="0",
            PARLEY_MAX_STREAMS_PER_USER="0",
        )
        server = Server(port, env, Path(workdir))
        server.start(timeout_s=60)
        try:
            assert server.process is not None
            pid = server.process.pid
            os.sched_setaffinity(pid, {SERVER_CPU})
            run = idle if args.workload == "idle" else fanout
            result = uvloop.run(run(server, pid, args))
        except BaseException:
            print(server.log()[-3000:], file=sys.stderr)
            raise
        finally:
            server.stop()
    print(json.dumps({"workload": args.workload, "path": args.path, **result}))


if __name__ == "__main__":
    main()
