"""Server CPU per REST request, against the framework's floor measured in the same run (issue 13).

Starts, side by side on core 0 (`taskset`), a bare Quart app with one GET route on the same
serving path as Parley (`bench/bare_quart.py`) and a Parley server (`python -m app serve`,
embedded default; `--backend redis` adds a private redis-server, `--database postgres` a fresh
PostgreSQL database migrated like the release phase). The load generator runs here, on core 1:
`--connections` keep-alive HTTP/1.1 connections on raw asyncio streams (uvloop), each sending
its next request when the last answer is in (a fixed concurrency).

Each round measures, one after the other, `--requests` of:
- `bare`: `GET /api/discussions/{id}` on the bare app (same body shape as Parley's answer);
- `get`: Parley's `GET /api/discussions/{id}` (bearer token, a public discussion);
- `post`: Parley's `POST /api/discussions/{id}/responses`, each body unique;
and reads each server's CPU (utime + stime from /proc/<pid>/stat) before and after (after the
server has gone quiet again, so work a request leaves to background tasks, such as the
notification worker reading the posted event, is counted with it): ms of CPU
per request, its ratio to `bare` in the same round, latency p50/p95 at the client, and for
posts the posts/s one core would sustain (1000 / ms per post). The machine is shared: compare
the ratios of one round, and take the medians over `--rounds` (printed last).
`core0_other_pct`: how much of core 0 went to other processes during the phase.

    python -m bench.rest_cpu                                  # embedded default (SQLite)
    python -m bench.rest_cpu --backend redis --database postgres
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.backing import fresh_postgres, private_redis  # noqa: E402
from bench.common import (  # noqa: E402
    CLIENT_CORE,
    SERVER_CORE,
    ServerProcess,
    core_busy_seconds,
    cpu_seconds,
    fmt_table,
    free_port,
    pin_to,
    run_async,
    sign,
    workdir,
)


class BareServer(ServerProcess):
    def command(self) -> list[str]:
        command = [sys.executable, str(ROOT / "bench" / "bare_quart.py"), "--port", str(self.port)]
        if shutil.which("taskset"):
            command = ["taskset", "-c", str(SERVER_CORE), *command]
        return command


# --- the load generator: raw HTTP/1.1 over keep-alive connections ------------------------------


class Client:
    """One keep-alive connection; `request` sends pre-encoded bytes and returns (status, body)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        self.writer.close()


def get_request(path: str, token: str | None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Accept: application/json\r\n\r\n".encode()


def post_request(path: str, token: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Phase:
    name: str
    requests: int
    cpu_ms: float
    wall_s: float
    p50_ms: float
    p95_ms: float
    errors: int
    core0_other_pct: float

    @property
    def ms_per_request(self) -> float:
        return self.cpu_ms / self.requests


async def run_phase(
    name: str, port: int, pid: int, requests: int, connections: int, make: Callable[[int], bytes]
) -> Phase:
    clients = [await Client.open(port) for _ in range(connections)]
    latencies: list[float] = []
    errors = 0
    next_index = 0
    expected = 201 if name == "post" else 200

    async def drive(client: Client) -> None:
        nonlocal next_index, errors
        while next_index < requests:
            index = next_index
            next_index += 1
            raw = make(index)
            started = time.perf_counter()
            status, _ = await client.request(raw)
            latencies.append(time.perf_counter() - started)
            if status != expected:
                errors += 1

    with sampled(pid, f"{name}-{requests}"):
        cpu0, busy0, wall0 = cpu_seconds(pid), core_busy_seconds(SERVER_CORE), time.monotonic()
        await asyncio.gather(*(drive(client) for client in clients))
        wall1 = time.monotonic()
        # Work the requests left behind (the notification and analysis workers reading the
        # posted events) is theirs: wait for the server to go quiet, and count it.
        await settle(pid)
        cpu1, busy1, settled = cpu_seconds(pid), core_busy_seconds(SERVER_CORE), time.monotonic()
    for client in clients:
        client.close()
    latencies.sort()
    wall = wall1 - wall0
    cpu = cpu1 - cpu0
    return Phase(
        name=name,
        requests=requests,
        cpu_ms=cpu * 1000,
        wall_s=wall,
        p50_ms=latencies[len(latencies) // 2] * 1000,
        p95_ms=latencies[int(len(latencies) * 0.95)] * 1000,
        errors=errors,
        core0_other_pct=max(0.0, (busy1 - busy0) - cpu) / (settled - wall0) * 100,
    )


QUIET_SHARE = 0.03  # of a core: a server this busy or less is idle (its timers, its sweeps)
SETTLE_WINDOW_S = 0.5
SETTLE_MAX_S = 20.0


async def settle(pid: int) -> None:
    """Wait until the server uses under QUIET_SHARE of a core over SETTLE_WINDOW_S."""
    deadline = time.monotonic() + SETTLE_MAX_S
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        await asyncio.sleep(SETTLE_WINDOW_S)
        if cpu_seconds(pid) - before <= QUIET_SHARE * SETTLE_WINDOW_S:
            return


PROFILE_DIR: Path | None = None  # --py-spy: where each phase's samples go


@contextmanager
def sampled(pid: int, label: str) -> Iterator[None]:
    """With --py-spy, sample the server during the phase (py-spy runs on the client's core, and
    `--nonblocking` does not pause the server); the collapsed stacks go to PROFILE_DIR."""
    if PROFILE_DIR is None:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = PROFILE_DIR / f"{label}.txt"
    command = [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "500", "--nonblocking", "-o", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached before the first request
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)


async def create_discussion(port: int, token: str) -> str:
    client = await Client.open(port)
    try:
        body = json.dumps({"title": "rest_cpu bench", "visibility": "public"}).encode()
        status, answer = await client.request(post_request("/api/discussions", token, body))
        if status != 201:
            raise RuntimeError(f"could not create a discussion: {status} {answer[:200]!r}")
        return str(json.loads(answer)["id"])
    finally:
        client.close()


async def measure(bare: ServerProcess, parley: ServerProcess, args: argparse.Namespace) -> list[dict[str, object]]:
    tokens = [sign(f"bench-user-{n}") for n in range(args.connections)]
    discussion = await create_discussion(parley.port, tokens[0])
    path = f"/api/discussions/{discussion}"
    bare_get = get_request("/api/discussions/AbCdEfGhIjKlMnOp", None)
    parley_gets = [get_request(path, token) for token in tokens]
    run_id = secrets.token_hex(4)

    def post(index: int) -> bytes:
        fields = {"body": f"rest_cpu {run_id} post {index}: unique words {index * 7919}"}
        if args.client_ids:  # as the page posts: each with its idempotency key
            fields["client_id"] = f"{run_id}-{index}"
        body = json.dumps(fields).encode()
        return post_request(path + "/responses", tokens[index % len(tokens)], body)

    # Warm-up: imports on first use, caches, the database's pages, the JIT-less interpreter's
    # specialisations; not counted.
    warm = max(200, args.requests // 10)
    await run_phase("bare", bare.port, bare.pid, warm, args.connections, lambda i: bare_get)
    await run_phase("get", parley.port, parley.pid, warm, args.connections, lambda i: parley_gets[i % len(tokens)])
    await run_phase("post", parley.port, parley.pid, warm, args.connections, lambda i: post(10_000_000 + i))

    rows: list[dict[str, object]] = []
    offset = 0
    for round_number in range(1, args.rounds + 1):
        phases = [
            await run_phase("bare", bare.port, bare.pid, args.requests, args.connections, lambda i: bare_get),
            await run_phase(
                "get", parley.port, parley.pid, args.requests, args.connections, lambda i: parley_gets[i % len(tokens)]
            ),
            await run_phase(
                "post", parley.port, parley.pid, args.requests, args.connections, lambda i, o=offset: post(o + i)
            ),
        ]
        offset += args.requests
        floor = phases[0].ms_per_request
        for phase in phases:
            rows.append(
                {
                    "round": round_number,
                    "request": phase.name,
                    "cpu_ms_per_req": phase.ms_per_request,
                    "x_bare": phase.ms_per_request / floor,
                    "p50_ms": phase.p50_ms,
                    "p95_ms": phase.p95_ms,
                    "req_per_s": phase.requests / phase.wall_s,
                    "per_core_per_s": 1000 / phase.ms_per_request,
                    "errors": phase.errors,
                    "core0_other_pct": phase.core0_other_pct,
                }
            )
    return rows


def medians(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    result = []
    for name in ("bare", "get", "post"):
        mine = [row for row in rows if row["request"] == name]
        summary: dict[str, object] = {"round": "median", "request": name}
        for key in ("cpu_ms_per_req", "x_bare", "p50_ms", "p95_ms", "req_per_s", "per_core_per_s", "core0_other_pct"):
            summary[key] = statistics.median(float(row[key]) for row in mine)  # type: ignore[arg-type]
        summary["errors"] = sum(int(row["errors"]) for row in mine)  # type: ignore[call-overload]
        result.append(summary)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["embedded", "redis"], default="embedded")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--requests", type=int, default=2000, help="requests per phase and round")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--client-ids", action="store_true", help="each post carries a client_id, as the page's do")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the Parley server")
    parser.add_argument("--py-spy", type=Path, help="a directory: sample every phase with py-spy into it")
    parser.add_argument(
        "--code", type=Path, help="run the Parley server from this checkout instead (a before/after in one window)"
    )
    args = parser.parse_args()
    global PROFILE_DIR
    if args.py_spy is not None:
        args.py_spy.mkdir(parents=True, exist_ok=True)
        PROFILE_DIR = args.py_spy
    if args.database == "postgres" and args.backend == "embedded":
        parser.error("--database postgres needs --backend redis (the embedded default is SQLite)")
    pin_to(CLIENT_CORE)

    with workdir() as directory, ExitStack() as stack:
        env = dict(item.split("=", 1) for item in args.env)
        if args.code is not None:
            env["PYTHONPATH"] = str(args.code.resolve())
        if args.backend == "redis":
            env["REDIS_URL"] = stack.enter_context(private_redis(directory))
        if args.database == "postgres":
            env["DATABASE_URL"] = stack.enter_context(fresh_postgres())
        bare = BareServer("bare", free_port(), directory)
        parley = ServerProcess("parley", free_port(), directory, env_overrides=env)
        stack.callback(bare.stop)
        stack.callback(parley.stop)
        bare.start()
        parley.start(timeout_s=60)
        rows = run_async(measure(bare, parley, args))

    columns = [
        "round",
        "request",
        "cpu_ms_per_req",
        "x_bare",
        "p50_ms",
        "p95_ms",
        "req_per_s",
        "per_core_per_s",
        "errors",
        "core0_other_pct",
    ]
    label = f"{args.backend}+{args.database}, {args.connections} connections, {args.requests} requests per phase"
    print(f"rest_cpu ({label})")
    print(fmt_table(rows, columns))
    print()
    summary = medians(rows)
    print(fmt_table(summary, columns))
    record = {"workload": "rest_cpu", "backend": args.backend, "database": args.database, "at": time.time()}
    print(json.dumps(record | {"rounds": rows, "median": summary}))


if __name__ == "__main__":
    main()
