"""Test support: real redis-server and real Parley server processes, started and stopped here.

No fakes: Redis is a real redis-server (REDIS_URL when set, else a private one on a free
port), and servers are `python -m app serve` subprocesses on free ports.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event

from app.infra.db import Database
from app.infra.redis_connection import RedisConnection
from app.log.eventlog_redis import RedisEventLog

ROOT = Path(__file__).resolve().parent.parent
TEST_JWT_SECRET = "test-secret-" + "x" * 40


class OwnRedisEventLog(RedisEventLog):
    """A `RedisEventLog` on a `RedisConnection` of its own, as one server process has, closed
    with the log (in a server, the process closes the connection it shares)."""

    def __init__(self, url: str, *, prefix: str, retention_s: int) -> None:
        self.connection = RedisConnection(url)
        super().__init__(self.connection, prefix=prefix, retention_s=retention_s)

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            await self.connection.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# How long a process may take to start listening (or to be ready) before a test fails. Only a
# bound on failure: waits end as soon as the process is up, which on a quiet machine is about a
# second; on a machine shared with parallel test workers and other jobs starts take far longer.
START_TIMEOUT_S = 60.0


def wait_for_port(
    port: int, timeout_s: float = START_TIMEOUT_S, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port} after {timeout_s}s")


class RedisServer:
    """A redis-server of our own, which a test may kill and start again on the same port.

    `persistence="none"` keeps nothing (a restart is an empty Redis: every stream and the epoch
    are gone); `"aof"` keeps an append-only file in `workdir` (appendfsync everysec: a killed
    redis-server loses nothing, its writes are in the OS already; only a host crash could).
    """

    def __init__(self, workdir: Path, port: int | None = None, persistence: str = "none") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server), and REDIS_URL is unset")
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.persistence = persistence
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        aof = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.persistence == "aof" else []
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            [self.binary, *args, *aof, "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, process=self.process)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM (a clean shutdown) or SIGKILL (a crash)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(10)
        self.process = None


@contextlib.contextmanager
def private_redis(port: int | None = None, persistence: str = "none") -> Iterator[str]:
    """A redis-server of our own on a free port (or the one given), stopped afterwards."""
    with redis_server(port, persistence) as server:
        yield server.url


@contextlib.contextmanager
def redis_server(port: int | None = None, persistence: str = "none") -> Iterator[RedisServer]:
    """A `RedisServer` in a temporary directory, started, and stopped afterwards."""
    with tempfile.TemporaryDirectory() as workdir:
        server = RedisServer(Path(workdir), port, persistence).start()
        try:
            yield server
        finally:
            server.stop()


@dataclass
class Server:
    """A real Parley server process."""

    port: int
    env: dict[str, str]
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> Server:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1"],
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(self.port, timeout_s, self.process)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                        return self
                time.sleep(0.05)
            raise TimeoutError("server never became ready")
        except BaseException:
            self.stop()
            raise

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def server_env(workdir: Path, port: int, **overrides: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("PARLEY_") and k not in {"REDIS_URL", "DATABASE_URL"}
    }
    env.update(
        PORT=str(port),
        PYTHONPATH=str(ROOT),
        PARLEY_DATA_DIR=str(workdir / ".parley"),
        DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'parley.db'}",
        PARLEY_JWT_SECRET=TEST_JWT_SECRET,
        PARLEY_DEV_LOGIN="1",
        PARLEY_LOG_LEVEL="WARNING",
    )
    env.update(overrides)
    return env


def sign(user_id: str, name: str | None = None, *, ttl_s: int = 3600, **claims: Any) -> str:
    """A token signed with the test servers' secret."""
    from joserfc import jwt
    from joserfc.jwk import OctKey

    now = int(time.time())
    body: dict[str, Any] = {"sub": user_id, "name": name or user_id, "iat": now, "exp": now + ttl_s, **claims}
    return jwt.encode({"alg": "HS256"}, body, OctKey.import_key(TEST_JWT_SECRET))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def json_headers(token: str) -> dict[str, str]:
    """For a raw body: bodies are refused (415) unless they say they are JSON."""
    return {**bearer(token), "Content-Type": "application/json"}


@dataclass
class SseEvent:
    id: str | None
    event: str
    data: str

    @property
    def json(self) -> Any:
        return json.loads(self.data)


class SseReader:
    """Parses an SSE byte stream into events and comments, as a browser would."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""
        self.comments: list[str] = []
        self.retry_ms: int | None = None

    async def next_event(self) -> SseEvent:
        while True:
            while b"\n\n" in self._buffer:
                block, self._buffer = self._buffer.split(b"\n\n", 1)
                event = self._parse(block.decode())
                if event is not None:
                    return event
            chunk = await self._chunks.__anext__()
            self._buffer += chunk.replace(b"\r\n", b"\n")

    def _parse(self, block: str) -> SseEvent | None:
        event_id, event_type, data = None, "message", []
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "":
                self.comments.append(value)
            elif name == "id":
                event_id = value
            elif name == "event":
                event_type = value
            elif name == "data":
                data.append(value)
            elif name == "retry":
                self.retry_ms = int(value)
        if not data:
            return None
        return SseEvent(event_id, event_type, "\n".join(data))


@contextlib.contextmanager
def statements_sent(db: Database, wanted: Callable[[str], bool]) -> Iterator[list[str]]:
    """The SQL statements the engine sends while inside, those for which `wanted` is true."""
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if wanted(statement):
            seen.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", before)
