"""A setting that keeps Parley from starting is said plainly: real `parley serve` processes,
each failing for one reason, exit non-zero with one or two lines that name the setting and
what to do, and no traceback (the detail is there at PARLEY_LOG_LEVEL=DEBUG)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from .support import Server, free_port, server_env

pytestmark = pytest.mark.slow

# Each case fails at once (refused connections on loopback); this only bounds a hang.
RUN_TIMEOUT_S = 60


def parley(workdir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    port = env.pop("PORT", None) or str(free_port())
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=workdir,
        env=server_env(workdir, int(port), **env),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


def assert_said_plainly(result: subprocess.CompletedProcess[str], setting: str) -> list[str]:
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert 1 <= len(lines) <= 2, result.stderr
    assert lines[0].startswith("parley: ") and setting in lines[0], result.stderr
    return lines


@pytest.fixture(params=["lean", "hypercorn"])
def front(request: pytest.FixtureRequest) -> str:
    """PARLEY_LEAN_STREAM: the lean front, or Hypercorn alone; they start differently."""
    return "1" if request.param == "lean" else "0"


def test_unreachable_redis(tmp_path: Path, front: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = parley(tmp_path, "serve", REDIS_URL=url, PARLEY_LEAN_STREAM=front)
    lines = assert_said_plainly(result, "REDIS_URL")
    assert url in lines[0] and "unset it" in lines[1]


def test_unreachable_redis_with_several_workers(tmp_path: Path, front: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = parley(tmp_path, "serve", REDIS_URL=url, WEB_CONCURRENCY="2", PARLEY_LEAN_STREAM=front)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    # Each worker says it, once.
    assert result.stderr.startswith("parley: cannot reach Redis")
    assert all(line.startswith(("parley: cannot reach Redis", "Start Redis")) for line in result.stderr.splitlines())


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("localhost:6379", 2),  # no scheme: refused while reading the settings
        ("redis://127.0.0.1:port/0", 1),  # refused by the Redis client
    ],
)
def test_bad_redis_url(tmp_path: Path, url: str, status: int) -> None:
    result = parley(tmp_path, "serve", REDIS_URL=url)
    assert_said_plainly(result, "REDIS_URL")
    assert result.returncode == status


def test_unreachable_database(tmp_path: Path, front: str) -> None:
    url = f"postgresql+asyncpg://parley:s3cret@127.0.0.1:{free_port()}/parley"
    result = parley(tmp_path, "serve", DATABASE_URL=url, PARLEY_LEAN_STREAM=front)
    lines = assert_said_plainly(result, "DATABASE_URL")
    assert "s3cret" not in result.stderr
    assert "Start the database" in lines[1]


def test_migrate_with_an_unreachable_database(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/parley"
    assert_said_plainly(parley(tmp_path, "migrate", DATABASE_URL=url), "DATABASE_URL")


def test_a_database_url_for_a_driver_parley_lacks(tmp_path: Path) -> None:
    result = parley(tmp_path, "serve", DATABASE_URL="postgres://u:p@db.example/parley")
    assert_said_plainly(result, "DATABASE_URL")
    assert result.returncode == 2


def test_busy_port(tmp_path: Path, front: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = parley(tmp_path, "serve", "--host", "127.0.0.1", PORT=str(port), PARLEY_LEAN_STREAM=front)
    lines = assert_said_plainly(result, f"PORT={port}")
    assert "already in use" in lines[0]


def test_second_server_on_the_same_data_dir(start_server: Callable[..., Server], tmp_path: Path, front: str) -> None:
    start_server(tmp_path)
    result = parley(tmp_path, "serve", "--host", "127.0.0.1", PARLEY_LEAN_STREAM=front)
    lines = assert_said_plainly(result, "PARLEY_DATA_DIR")
    assert "REDIS_URL" in lines[1]


def test_the_detail_is_there_at_debug(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = parley(tmp_path, "serve", REDIS_URL=url, PARLEY_LOG_LEVEL="DEBUG")
    assert result.returncode == 1
    assert "Traceback" in result.stderr  # in the JSON log line's "exception"
    assert f"parley: cannot reach Redis at REDIS_URL={url}" in result.stderr
