"""SQLAlchemy's aiosqlite adapter, with one trip to the SQLite thread per statement.

aiosqlite runs each connection's calls on a thread of its own; every call is a round trip
(a queue put, a thread wake-up, a GIL hand-over, a loop wake-up). SQLAlchemy's adapter makes
four per statement (open a cursor, execute, fetch all, close the cursor) and one more for the
rollback that ends every session, even one that only read. Measured on this machine
(`docs/PERFORMANCE.md`, "REST path"), those trips were most of a REST request's database
cost: a primary-key read took ~380 µs of CPU through the adapter and ~15 µs as one trip.

Here a statement is one trip: a function on the SQLite thread opens a cursor, executes,
fetches every row and closes it, and hands back the rows, `description`, `rowcount` and
`lastrowid`. A commit or rollback with no transaction open makes no trip at all: it is a no-op
in Python's sqlite3 too (it checks `in_transaction` itself). Everything else (errors, the
execute lock, fetching from the buffered rows) is SQLAlchemy's own.

Used by `Database` for `sqlite+aiosqlite` URLs (the `module=` argument of the engine) when
SQLAlchemy has the adapter classes this builds on (2.1: this module then imports); otherwise
the stock adapter is used.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Sequence
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util.concurrency import await_

Row = tuple[Any, ...]
Outcome = tuple[Any, list[Row], int, int | None]


def _execute(connection: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> Outcome:
    """On the SQLite thread: the whole statement, and everything SQLAlchemy reads afterwards."""
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose statement is one trip to the SQLite thread."""

    __slots__ = ("_description", "_lastrowid", "_rowcount", "arraysize")

    def __init__(self, adapt_connection: Any) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]  # nothing open on the SQLite thread
        self._soft_closed_memoized: Any = {}
        self._rows: collections.deque[Row] = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self.arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]  # None before an INSERT, as in sqlite3

    async def _async_soft_close(self) -> None:
        return  # nothing open on the SQLite thread: the rows are here already

    def close(self) -> None:
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        try:
            return await_(self._run(operation, parameters, many=False))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Sequence[Any]) -> Any:
        try:
            return await_(self._run(operation, seq_of_parameters, many=True))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    async def _run(self, operation: Any, parameters: Any, *, many: bool) -> None:
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        async with self._adapt_connection._execute_mutex:
            outcome: Outcome = await connection._execute(  # type: ignore[no-untyped-call]
                _execute, connection._conn, operation, parameters, many
            )
        self._description, rows, self._rowcount, self._lastrowid = outcome
        self._rows = collections.deque(rows)

    def setinputsizes(self, *inputsizes: Any) -> None:
        return None

    def nextset(self) -> None:
        return None


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneTripCursor

    def _in_transaction(self) -> bool:
        # Read on the loop's thread while the SQLite thread is idle for this connection
        # (SQLAlchemy uses a connection from one task at a time).
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        return connection._connection is not None and connection._conn.in_transaction

    def rollback(self) -> None:
        if self._in_transaction():
            super().rollback()

    def commit(self) -> None:
        if self._in_transaction():
            super().commit()


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> Any:
        connection = super().connect(*arg, **kw)
        connection.__class__ = OneTripConnection  # same slots: only the methods differ
        return connection


def dbapi_module() -> Any:
    """The `module=` for `create_async_engine` with a `sqlite+aiosqlite` URL."""
    return OneTripDBAPI(aiosqlite, sqlite3)
