"""Storing a new response: its row, its discussion's last activity, its stances and its event
(app/core/outbox.py), in one transaction, or none of them.

On SQLite (the embedded default) the transaction is one trip to the SQLite thread
(app/infra/sqlite_trip.py): the same Core statements, compiled once, run there one after the
other. Through the async session they were four trips and an ORM session per post, a third of
its CPU (issue 13, docs/PERFORMANCE.md). On PostgreSQL the statements run on a Core connection,
one round trip each.

A repeated `client_id` of the same author is found by the unique constraint at the insert
(`store` answers None; the handler then answers the first response): a read first would cost
every post to spare the rare retry.
"""

from __future__ import annotations

import sqlite3
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError

from app.analysis import store as analysis_store
from app.auth import Identity
from app.core import outbox
from app.domain import responses as domain
from app.domain.models import OutboxEntry, Response
from app.infra import sqlite_trip
from app.infra.db import Database
from app.log import topics

EVENT_TYPE = "response_posted"


@dataclass(frozen=True)
class Stored:
    body: dict[str, Any]  # the response as REST answers it and its event carries it
    event: OutboxEntry  # committed: relay it (app/core/outbox.py)


async def store(db: Database, identity: Identity, response: Response, stances: Mapping[str, str]) -> Stored | None:
    """Store the new `response` (its `id` set) with its stances and event; None when its
    author already posted with its `client_id`."""
    if db.one_trip:
        statements = _statements(db.engine.dialect)
        return await sqlite_trip.in_one_trip(
            db.engine, lambda connection: _on_sqlite(connection, statements, identity, response, stances)
        )
    return await _in_transaction(db, identity, response, stances)


def _stance_rows(response: Response, stances: Mapping[str, str]) -> list[dict[str, Any]]:
    return analysis_store.stance_rows(
        discussion_id=response.discussion_id,
        user_id=response.author_id,
        response_id=response.id or 0,
        stances=stances,
    )


def _event(identity: Identity, body: dict[str, Any]) -> OutboxEntry:
    discussion_id = body["discussion_id"]
    return outbox.entry(
        topics.discussion(discussion_id),
        EVENT_TYPE,
        discussion_id=discussion_id,
        user=identity.public,
        payload={"response": body},
    )


async def _in_transaction(
    db: Database, identity: Identity, response: Response, stances: Mapping[str, str]
) -> Stored | None:
    """The same statements on a Core connection (no ORM session: nothing here is an object it
    would track), one round trip each."""
    try:
        async with db.engine.begin() as connection:
            inserted = await connection.execute(domain.INSERT_RESPONSE, domain.response_row(response))
            response.id = inserted.scalar_one()
            await connection.execute(domain.TOUCH_DISCUSSION, domain.touch_row(response))
            if stances:
                await connection.execute(
                    analysis_store.stance_upsert(db.engine.dialect.name), _stance_rows(response, stances)
                )
            body = domain.response_json(response, identity.name)
            event = _event(identity, body)
            entry = await connection.execute(outbox.INSERT_ENTRY, outbox.entry_row(event))
            event.id = entry.scalar_one()
    except IntegrityError:
        return None
    return Stored(body, event)


class _Statements:
    """The post's statements, compiled for SQLite once per engine."""

    def __init__(self, dialect: Dialect) -> None:
        self.response = sqlite_trip.Prepared(domain.INSERT_RESPONSE, dialect, domain.RESPONSE_COLUMNS)
        self.touch = sqlite_trip.Prepared(domain.TOUCH_DISCUSSION, dialect, ())
        self.stance = sqlite_trip.Prepared(
            analysis_store.stance_upsert("sqlite"), dialect, analysis_store.STANCE_COLUMNS
        )
        self.event = sqlite_trip.Prepared(outbox.INSERT_ENTRY, dialect, outbox.ENTRY_COLUMNS)


_compiled: weakref.WeakKeyDictionary[Dialect, _Statements] = weakref.WeakKeyDictionary()


def _statements(dialect: Dialect) -> _Statements:
    compiled = _compiled.get(dialect)
    if compiled is None:
        compiled = _compiled[dialect] = _Statements(dialect)
    return compiled


def _on_sqlite(
    connection: sqlite3.Connection,
    statements: _Statements,
    identity: Identity,
    response: Response,
    stances: Mapping[str, str],
) -> Stored | None:
    """On the SQLite thread: the whole transaction, committed (`in_one_trip` rolls back what
    an error leaves open)."""
    try:
        (response.id,) = connection.execute(
            statements.response.sql, statements.response.parameters(domain.response_row(response))
        ).fetchone()
    except sqlite3.IntegrityError:
        return None
    connection.execute(
        statements.touch.sql,
        statements.touch.parameters(domain.touch_row(response)),
    )
    if stances:
        rows = _stance_rows(response, stances)
        connection.executemany(statements.stance.sql, [statements.stance.parameters(row) for row in rows])
    body = domain.response_json(response, identity.name)
    event = _event(identity, body)
    (event.id,) = connection.execute(
        statements.event.sql, statements.event.parameters(outbox.entry_row(event))
    ).fetchone()
    connection.commit()
    return Stored(body, event)
