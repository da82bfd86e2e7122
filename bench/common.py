"""What every bench script shares: tokens, server processes, /proc sampling, a latency histogram.

Nothing here imports the application: the servers under test are separate processes, started
the way `tests/support.py` starts them (`python -m app serve` with its environment), so the
figures are those of a real deployment and the load generator never shares a loop with them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
BENCH_JWT_SECRET = "bench-secret-" + "b" * 40
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")

# Core assignment on the 2-core machine: the server under test on core 0, the load generator and
# publisher on core 1, so neither steals the other's CPU (issue 4's method).
SERVER_CORE = 0
CLIENT_CORE = 1


def raise_fd_limit() -> int:
    """Raise this process's soft fd limit to the hard one; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def pin_to(core: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        if core < (os.cpu_count() or 1):
            os.sched_setaffinity(0, {core})


def run_async(main: Coroutine[object, object, T]) -> T:
    """asyncio.run on uvloop when it is installed (the load generator must not be the bottleneck)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port} after {timeout_s}s")


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def sign(user_id: str, secret: str = BENCH_JWT_SECRET, ttl_s: int = 6 * 3600) -> str:
    """An HS256 JWT the servers accept. Hand-rolled with hmac so 20,000 tokens cost milliseconds."""
    now = int(time.time())
    header = _b64(b'{"alg":"HS256","typ":"JWT"}')
    claims = {"sub": user_id, "name": user_id, "iat": now, "exp": now + ttl_s}
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = header + b"." + payload
    signature = _b64(hmac.new(secret.encode(), signing_input, hashlib.sha256).digest())
    return (signing_input + b"." + signature).decode()


# --- the server process under test --------------------------------------------------------

CPU_CGROUP_ROOT = Path("/sys/fs/cgroup/cpu")  # cgroup v1 `cpu` controller, as on this machine
CFS_PERIOD_US = 100_000


class CpuQuota:
    """A cgroup that caps its processes at `cores` of CPU (CFS bandwidth control).

    For `scale`: on a 2-core machine two server processes and the load generator cannot each
    have a core, so each server gets the same fraction of core 0 (say 0.45) and the comparison
    is 1 server vs 2 servers of equal size, the load generator keeping core 1."""

    def __init__(self, name: str, cores: float) -> None:
        self.path = CPU_CGROUP_ROOT / name
        try:
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(int(cores * CFS_PERIOD_US)))
        except OSError as error:
            message = f"--cpu-quota needs a writable cgroup v1 cpu controller at {CPU_CGROUP_ROOT}: {error}"
            raise SystemExit(message) from None

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        for _ in range(50):  # the kernel lets go of an exited process's cgroup shortly after
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


@dataclass
class ServerProcess:
    """A Parley server (`python -m app serve`) or the reference server, on a port of its own."""

    kind: str  # "parley" or "reference"
    port: int
    workdir: Path
    env_overrides: dict[str, str] = field(default_factory=dict)
    core: int | None = SERVER_CORE
    cpu_quota: float | None = None  # fraction of a core (CpuQuota), None: unlimited
    process: subprocess.Popen[bytes] | None = None
    _quota: CpuQuota | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("server not running")
        return self.process.pid

    def command(self) -> list[str]:
        if self.kind == "parley":
            command = [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1"]
        else:
            command = [sys.executable, str(ROOT / "bench" / "reference_server.py"), "--port", str(self.port)]
        # taskset execs the program, so the pid we hold is the server's own.
        if self.core is not None and shutil.which("taskset") and self.core < (os.cpu_count() or 1):
            command = ["taskset", "-c", str(self.core), *command]
        return command

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_") and k not in {"REDIS_URL"}}
        env.update(
            PORT=str(self.port),
            PYTHONPATH=str(ROOT),
            PARLEY_DATA_DIR=str(self.workdir / ".parley"),
            DATABASE_URL=f"sqlite+aiosqlite:///{self.workdir / 'parley.db'}",
            PARLEY_JWT_SECRET=BENCH_JWT_SECRET,
            PARLEY_LOG_LEVEL="WARNING",
            # The publisher posts as one user far above the per-user limit (NFR-015 is about
            # abuse, not load): lift it, or the benchmark measures 429s.
            PARLEY_RATE_LIMIT_PER_MIN="1000000",
            # Likewise the other abuse limits (0: off): thousands of clients from one loopback
            # address, many streams per benchmark user, seeded discussions.
            PARLEY_CONNECT_LIMIT_PER_MIN="0",
            PARLEY_MAX_STREAMS_PER_USER="0",
            PARLEY_DISCUSSION_LIMIT_PER_MIN="0",
            PARLEY_TYPING_LIMIT_PER_MIN="0",
            PARLEY_PRESENCE_LIMIT_PER_MIN="0",
            PARLEY_FOLLOW_LIMIT_PER_MIN="0",
        )
        env.update(self.env_overrides)
        return env

    def start(self, timeout_s: float = 30.0) -> ServerProcess:
        log = (self.workdir / f"server-{self.port}.log").open("ab")
        self.process = subprocess.Popen(
            self.command(), cwd=self.workdir, env=self.environment(), stdout=log, stderr=subprocess.STDOUT
        )
        if self.cpu_quota is not None:
            self._quota = self._quota or CpuQuota(f"parley-bench-{self.port}", self.cpu_quota)
            self._quota.add(self.process.pid)
        wait_for_port(self.port, timeout_s, self.process)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._dump_stacks()
                self.process.kill()
                self.process.wait(5)
        self.process = None
        if self._quota is not None:
            self._quota.remove()
            self._quota = None

    def _dump_stacks(self) -> None:
        """A server that will not stop is a finding: keep its threads' stacks (py-spy, if present)."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if self.process is None or not Path(spy).exists():
            return
        out = ROOT / "bench" / "results" / f"stuck-{self.kind}-{self.port}-{int(time.time())}.txt"
        with contextlib.suppress(OSError, subprocess.SubprocessError), out.open("wb") as file:
            subprocess.run([spy, "dump", "--pid", str(self.process.pid), "--locals"], stdout=file, timeout=30)
        print(f"server {self.port} did not stop in time; stacks in {out}", file=sys.stderr)

    def log_tail(self, lines: int = 20) -> str:
        path = self.workdir / f"server-{self.port}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="parley-bench-") as path:
        yield Path(path)


# --- /proc sampling -------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """Resident set size from /proc/<pid>/status (VmRSS, in kB)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time from /proc/<pid>/stat (fields 14 and 15, in clock ticks)."""
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    # The command name (field 2) may contain spaces; everything after its ')' is fixed.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def core_busy_seconds(core: int) -> float:
    """Busy time of one core since boot (/proc/stat: everything but idle and iowait). Minus the
    server's own CPU over an interval, it tells how much other work shared the server's core."""
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith(f"cpu{core} "):
                ticks = [int(value) for value in line.split()[1:]]
                return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS
    return 0.0


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU used by a process between `start()` and `stop()`, as seconds and as a share of one core."""

    def __init__(self, pid: int | None) -> None:
        self._pid = pid
        self._cpu0 = 0.0
        self._wall0 = 0.0
        self.cpu_s = 0.0
        self.wall_s = 0.0

    def _read(self) -> float:
        return own_cpu_seconds() if self._pid is None else cpu_seconds(self._pid)

    def start(self) -> CpuMeter:
        self._cpu0, self._wall0 = self._read(), time.monotonic()
        return self

    def stop(self) -> CpuMeter:
        self.cpu_s = self._read() - self._cpu0
        self.wall_s = time.monotonic() - self._wall0
        return self

    @property
    def share(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s else 0.0


# --- latency ----------------------------------------------------------------------------------


class LatencyHistogram:
    """Delivery latencies in 100 µs buckets up to 120 s: O(1) per sample, fixed memory, exact
    to 0.1 ms. A sorted list would cost the client more than the server at 100,000 events/s."""

    BUCKET_US = 100
    BUCKETS = 1_200_000

    def __init__(self) -> None:
        self.counts = array("q", bytes(8 * self.BUCKETS))
        self.n = 0
        self.max_us = 0
        self.negative = 0  # clock oddities: a sample "before" its send time

    def reset(self) -> None:
        self.counts = array("q", bytes(8 * self.BUCKETS))
        self.n = 0
        self.max_us = 0
        self.negative = 0

    def add(self, latency_us: int) -> None:
        if latency_us < 0:
            self.negative += 1
            latency_us = 0
        if latency_us > self.max_us:
            self.max_us = latency_us
        bucket = latency_us // self.BUCKET_US
        self.counts[bucket if bucket < self.BUCKETS else self.BUCKETS - 1] += 1
        self.n += 1

    def percentiles_ms(self, quantiles: tuple[float, ...] = (0.5, 0.95, 0.99)) -> dict[str, float]:
        """Upper edge of the bucket holding each quantile, in ms; plus max."""
        result: dict[str, float] = {}
        if self.n == 0:
            return {f"p{round(q * 100)}": float("nan") for q in quantiles} | {"max": float("nan")}
        targets = sorted((max(1, int(q * self.n + 0.999999)), f"p{round(q * 100)}") for q in quantiles)
        seen = 0
        index = 0
        for bucket, count in enumerate(self.counts):
            if not count:
                continue
            seen += count
            while index < len(targets) and seen >= targets[index][0]:
                result[targets[index][1]] = (bucket + 1) * self.BUCKET_US / 1000
                index += 1
            if index == len(targets):
                break
        result["max"] = self.max_us / 1000
        return result


def fmt_table(rows: list[dict[str, object]], columns: list[str]) -> str:
    """A Markdown table, so the output pastes straight into docs/PERFORMANCE.md."""
    cells = [[_fmt(row.get(column, "")) for column in columns] for row in rows]
    widths = [max(len(column), *(len(row[i]) for row in cells)) for i, column in enumerate(columns)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
