"""The database: one async engine per app, SQLite (aiosqlite) by default or PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

try:
    from app.infra.sqlite_driver import dbapi_module
except ImportError:  # an SQLAlchemy without the adapter classes it builds on: the stock adapter
    dbapi_module = None  # type: ignore[assignment]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the writer; the busy timeout queues writers instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    # Commits in WAL mode need no fsync with synchronous=NORMAL (still crash-safe; a power cut
    # may lose the last commits): many times the write rate, so writers wait far less. Waiting
    # writers queue up to the busy timeout; bench/ saw "database is locked" at 5 s under load.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=20000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


# A pooled PostgreSQL connection idle longer than this is pinged before use; one used more
# recently is not (see `_ping_when_idle`).
IDLE_PING_S = 1.0
_CHECKED_IN_AT = "parley_checked_in_at"


def _ping_when_idle(pool: Any, dialect: Dialect) -> None:
    """Pessimistic disconnect handling, but only for connections that sat idle: SQLAlchemy's
    `pool_pre_ping` pings at every checkout, one more round trip per session (16 % of a
    `GET /api/discussions/{id}`'s CPU on PostgreSQL, issue 13). A connection in steady use
    was just shown to work; one that waited (through a database restart, say) is pinged, and
    a failed ping makes the pool replace it (`DisconnectionError`), as pre-ping does."""

    def checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKED_IN_AT] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in_at = record.info.get(_CHECKED_IN_AT)
        if checked_in_at is None or time.monotonic() - checked_in_at <= IDLE_PING_S:
            return
        try:
            alive = dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise DisconnectionError("a pooled connection failed its ping") from error
        if not alive:
            raise DisconnectionError("a pooled connection failed its ping")

    event.listen(pool, "checkin", checkin)
    event.listen(pool, "checkout", checkout)


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        # A reconnect storm opens many sessions at once: a larger pool, and a wait for a free
        # connection well past a burst instead of a 500.
        options: dict[str, Any] = {}
        # Whole transactions can run on the SQLite thread (app/infra/sqlite_trip.py).
        self.one_trip = url.startswith("sqlite+aiosqlite") and dbapi_module is not None
        if self.one_trip:
            # One trip to the SQLite thread per statement, none for an empty commit or rollback
            # (app/infra/sqlite_driver.py): most of a REST request's database CPU was trips.
            options["module"] = dbapi_module()
        self.engine: AsyncEngine = create_async_engine(url, pool_size=10, max_overflow=20, pool_timeout=60, **options)
        if url.startswith("sqlite"):
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            _ping_when_idle(self.engine.sync_engine.pool, self.engine.dialect)
        self._sessions = async_sessionmaker(self.engine, class_=AsyncSession, expire_on_commit=False)
        # Reads that need no transaction (see `read_session`). SQLite needs nothing: Python's
        # sqlite3 opens a transaction only for a write, and the driver skips the empty rollback.
        self._read_sessions = self._sessions
        if not url.startswith("sqlite"):
            reads = self.engine.execution_options(isolation_level="AUTOCOMMIT")
            self._read_sessions = async_sessionmaker(reads, class_=AsyncSession, expire_on_commit=False)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session:
            yield session

    @asynccontextmanager
    async def read_session(self) -> AsyncIterator[AsyncSession]:
        """A session for reads only, outside any transaction: on PostgreSQL each statement runs
        on its own (autocommit), so no `BEGIN` and `ROLLBACK` round trips around it (asyncpg's
        autocommit is a client-side flag: setting and resetting it costs no trip). Under READ
        COMMITTED, PostgreSQL's default, every statement of a transaction takes its own snapshot
        anyway, so reads see exactly what they did inside one. Not for anything that writes:
        each write would commit at once (issue 13)."""
        async with self._read_sessions() as session:
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()
