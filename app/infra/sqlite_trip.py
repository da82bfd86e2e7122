"""A whole transaction in one trip to the SQLite thread.

Each statement through SQLAlchemy's async adapter is a trip to the connection's thread (a queue
put, a thread wake-up, a GIL hand-over, a loop wake-up: app/infra/sqlite_driver.py), plus the
ORM session and greenlet around it. A post is four of them (insert the response, touch its
discussion, insert its event, commit), and with the statements' own overhead they were a third
of a post's CPU (issue 13). Here a function runs on the thread of a pooled connection with the
plain `sqlite3.Connection`, executes its statements there and commits: one trip.

The statements stay SQLAlchemy Core, compiled once for SQLite (`Prepared`), and their values
pass through the columns' own bind processors, so what is stored is exactly what the ORM would
store (datetimes as SQLAlchemy's SQLite strings, JSON as JSON text, booleans as 0/1).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import aiosqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

T = TypeVar("T")


class Prepared:
    """A Core statement compiled for SQLite (qmark parameters), with the processors that turn
    Python values into what SQLAlchemy would bind for each parameter."""

    def __init__(self, statement: ClauseElement, dialect: Dialect, keys: Sequence[str]) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        assert isinstance(compiled, SQLCompiler)
        self.sql = compiled.string
        order = compiled.positiontup or []
        self._names = [compiled.binds[name].key for name in order]
        self._processors = [compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in order]

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(
            values[name] if process is None else process(values[name])
            for name, process in zip(self._names, self._processors, strict=True)
        )


async def in_one_trip(engine: AsyncEngine, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run `work` on the SQLite thread of a pooled connection, outside any transaction, and
    return what it returns. `work` commits what it writes; whatever it leaves open (it raised)
    is rolled back on the thread before the error comes back here."""
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver: aiosqlite.Connection = raw.driver_connection  # type: ignore[assignment]
        return await driver._execute(_transaction, driver._conn, work)  # type: ignore[no-untyped-call,no-any-return]


def _transaction(connection: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    try:
        return work(connection)
    finally:
        if connection.in_transaction:
            connection.rollback()
