"""`parley serve`'s defaults, on real processes: loopback while development login is on, the
URL to open printed once serving, no Alembic plugin chatter, and reason phrases on status
lines whichever front serves the request."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.settings import Settings

from .support import free_port, server_env

START_TIMEOUT_S = 30


@dataclass
class Started:
    port: int
    out: Path
    err: Path

    def said(self) -> str:
        return self.out.read_text()


@contextlib.contextmanager
def serving(workdir: Path, *args: str, **env: str) -> Iterator[Started]:
    """`parley serve` as a user starts it (no --host), until it prints the URL to open."""
    port = free_port()
    environment = server_env(workdir, port, **env)
    started = Started(port, workdir / "stdout.txt", workdir / "stderr.txt")
    with started.out.open("wb") as out, started.err.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", *args], cwd=workdir, env=environment, stdout=out, stderr=err
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Parley is serving on" not in started.said():
            assert process.poll() is None, started.err.read_text()
            assert time.monotonic() < deadline, started.err.read_text()
            time.sleep(0.05)
        yield started
    finally:
        process.terminate()
        process.wait(15)


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def status_line(port: int, path: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, head
            head += chunk
    return head.split(b"\r\n", 1)[0].decode()


def test_host_follows_development_login() -> None:
    assert Settings.from_env({}).host == "127.0.0.1"  # dev login on: nobody else can sign in as you
    assert Settings.from_env({"PARLEY_JWT_SECRET": "s" * 32}).host == "0.0.0.0"
    assert Settings.from_env({"PARLEY_DEV_LOGIN": "1", "PARLEY_JWT_SECRET": "s" * 32}).host == "127.0.0.1"
    assert Settings.from_env({"PARLEY_HOST": "0.0.0.0"}).host == "0.0.0.0"


@pytest.mark.slow
def test_with_development_login_it_listens_on_loopback_only(tmp_path: Path) -> None:
    with serving(tmp_path, PARLEY_LOG_LEVEL="INFO") as server:
        assert f"Parley is serving on http://127.0.0.1:{server.port}/" in server.said()
        assert reachable("127.0.0.1", server.port)
        # Another loopback address reaches a server bound to every interface, not this one.
        assert not reachable("127.0.0.2", server.port)
        log = server.err.read_text()
    assert "Running upgrade" in log  # the migrations ran and said so ...
    assert "alembic.runtime.plugins" not in log  # ... without naming each Alembic plugin


@pytest.mark.slow
def test_parley_host_opens_it_up(tmp_path: Path) -> None:
    with serving(tmp_path, PARLEY_HOST="0.0.0.0") as server:
        assert reachable("127.0.0.2", server.port)
        assert f"Parley is serving on http://localhost:{server.port}/" in server.said()


@pytest.mark.slow
@pytest.mark.parametrize("front", ["lean", "hypercorn"])
def test_status_lines_carry_a_reason_phrase(tmp_path: Path, front: str) -> None:
    with serving(tmp_path, PARLEY_LEAN_STREAM="1" if front == "lean" else "0") as server:
        assert status_line(server.port, "/") == "HTTP/1.1 200 OK"
        assert status_line(server.port, "/static/app.js") == "HTTP/1.1 200 OK"
        assert status_line(server.port, "/nowhere") == "HTTP/1.1 404 Not Found"
        # No token: the stream (the lean front's own path, or Hypercorn's) refuses.
        assert status_line(server.port, "/stream") == "HTTP/1.1 401 Unauthorized"
