"""The users table, kept from token claims: Parley does not own identities, the token issuer does.

Every authenticated request upserts its caller (id and display name), so that @mentions and
notifications can resolve people Parley has seen. Two ways in:

- `remember`: written before the request goes on (REST handlers, whose rows may refer to the
  user at once).
- `remember_soon`: queued for the background writer, which upserts everyone queued in one
  statement. Stream connects use it: nothing they do needs the row, and after a restart a
  reconnect storm would otherwise be one database transaction per client.

Both skip a user whose name is known to be unchanged (a bounded LRU of recent users), so a
steady state writes nothing.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections import OrderedDict
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite

from app.auth import Identity
from app.cancellation import raise_if_cancelling, stop_if_cancelled
from app.domain.models import User, utcnow
from app.infra.db import Database

log = logging.getLogger(__name__)

KNOWN_USERS_CACHE = 10_000
# Users waiting for the background writer; past this, new ones wait for their next request.
MAX_PENDING = 10_000
# Rows per statement: 4 parameters each, well under SQLite's limit of 32,766.
WRITE_BATCH = 500
MAX_BACKOFF_S = 5.0

_USERS = User.__table__  # type: ignore[attr-defined]


@functools.cache
def _upsert(dialect: str) -> Any:
    """INSERT … ON CONFLICT (id) DO UPDATE the name, only where it changed. Built once and run
    with many rows (executemany), so SQLAlchemy compiles it once, not once per batch."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(_USERS)
    return statement.on_conflict_do_update(
        index_elements=[_USERS.c.id],
        set_={"name": statement.excluded.name, "updated_at": statement.excluded.updated_at},
        where=_USERS.c.name != statement.excluded.name,
    )


# The one user every deleted account's responses are left to (app/api/account.py). No token
# may name it: its name would be overwritten, and its bearer would act as everyone's past.
DELETED_USER_ID = "parley:deleted-user"
DELETED_USER_NAME = "deleted user"


class UserDirectory:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._known: OrderedDict[str, str] = OrderedDict()  # user id -> name last written
        self._pending: dict[str, str] = {}
        self._wake = asyncio.Event()

    def _is_known(self, identity: Identity) -> bool:
        if self._known.get(identity.user_id) != identity.name:
            return False
        self._known.move_to_end(identity.user_id)
        return True

    def forget(self, user_id: str) -> None:
        """The user's row was deleted: their next request writes it again."""
        self._known.pop(user_id, None)
        self._pending.pop(user_id, None)

    async def remember(self, identity: Identity) -> None:
        if not self._is_known(identity):
            await self._write({identity.user_id: identity.name})

    def remember_soon(self, identity: Identity) -> None:
        if self._is_known(identity) or self._pending.get(identity.user_id) == identity.name:
            return
        if len(self._pending) >= MAX_PENDING and identity.user_id not in self._pending:
            return  # bounded: this user is written on a later request
        self._pending[identity.user_id] = identity.name
        self._wake.set()

    async def _write(self, users: dict[str, str]) -> None:
        now = utcnow()
        rows = [{"id": user_id, "name": name, "created_at": now, "updated_at": now} for user_id, name in users.items()]
        engine = self._db.engine
        async with engine.begin() as connection:  # a Core statement: no ORM session needed
            await connection.execute(_upsert(engine.dialect.name), rows)
        for user_id, name in users.items():
            self._known[user_id] = name
            self._known.move_to_end(user_id)
        while len(self._known) > KNOWN_USERS_CACHE:
            self._known.popitem(last=False)

    async def flush(self) -> None:
        """Write everything queued, one batch at a time."""
        while self._pending:
            batch = dict(itertools.islice(self._pending.items(), WRITE_BATCH))
            await self._write(batch)
            for user_id, name in batch.items():
                if self._pending.get(user_id) == name:
                    del self._pending[user_id]

    async def run(self) -> None:
        """The background writer. Owned by the app; cancelled on shutdown (after a last flush)."""
        backoff_s = 0.1
        while True:
            raise_if_cancelling()
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
                backoff_s = 0.1
            except Exception as error:
                stop_if_cancelled(error)
                # The queue is kept; the next pass retries. The database may be restarting.
                log.exception("users: could not write %d users; retrying in %.1fs", len(self._pending), backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, MAX_BACKOFF_S)
                self._wake.set()
