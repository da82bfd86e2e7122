from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest
from playwright.async_api import Browser, async_playwright

from app.infra import migrate
from app.infra.db import Database
from app.infra.redis_connection import RedisConnection

from .support import Server, free_port, private_redis, server_env


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """REDIS_URL when set, else a private redis-server for this test session."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
    else:
        with private_redis() as url:
            yield url


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of this test's own, so tests never see each other's keys."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def redis_connection(redis_url: str) -> AsyncIterator[RedisConnection]:
    """A `RedisConnection` to `redis_url`, as one server process has; closed after the test."""
    connection = RedisConnection(redis_url)
    try:
        yield connection
    finally:
        await connection.close()


PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session, migrated like the Procfile's release phase."""
    name = f"parley_test_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    # Requested from inside a running event loop: do the blocking work on a thread of its own.
    def in_thread(work: Callable[[], object]) -> None:
        with ThreadPoolExecutor(1) as pool:
            pool.submit(work).result()

    try:
        in_thread(lambda: asyncio.run(admin(f'CREATE DATABASE "{name}"')))
    except (OSError, asyncpg.PostgresError) as error:
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {error}")
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    in_thread(lambda: migrate.upgrade(url))
    yield url
    in_thread(lambda: asyncio.run(admin(f'DROP DATABASE "{name}" WITH (FORCE)')))


@pytest.fixture(params=["lean", "hypercorn"])
def stream_path(request: pytest.FixtureRequest) -> dict[str, str]:
    """Server env for each way `GET /stream` is served: the lean front, or Hypercorn alone.
    Stream tests take it so both paths pass the same conformance tests."""
    return {"PARLEY_LEAN_STREAM": "1" if request.param == "lean" else "0"}


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start real server processes; every one is stopped after the test."""
    servers: list[Server] = []

    def start(workdir: Path | None = None, **env: str) -> Server:
        port = free_port()
        directory = workdir or tmp_path
        server = Server(port, server_env(directory, port, **env), directory)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
HAVE_CHROMIUM = Path(CHROMIUM).exists()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium through Playwright (its own browser download cannot work here)."""
    if not HAVE_CHROMIUM:
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    """A fresh, migrated SQLite database."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}"
    await asyncio.to_thread(migrate.upgrade, url)
    database = Database(url)
    yield database
    await database.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A fresh database of each kind: a migrated SQLite file, the shared PostgreSQL one."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}"
        await asyncio.to_thread(migrate.upgrade, url)
    else:
        url = request.getfixturevalue("postgres_url")
    database = Database(url)
    yield database
    await database.close()
