"""Run Alembic migrations from code (the embedded default migrates its SQLite file on start)."""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from app.infra.resources import MIGRATIONS_DIR

if TYPE_CHECKING:
    from alembic.config import Config

# The newest revision in the migrations' versions/ (tests/test_rest.py checks it against Alembic's own
# head). A SQLite file already there starts without importing Alembic at all: a restart
# matters most while clients are waiting to reconnect (bench/: herd).
SCHEMA_HEAD = "0005"


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    # No alembic.ini: it stays in the checkout for `alembic revision`; an installed package has
    # only the migrations themselves (app/infra/resources.py).
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = url
    config.attributes["configure_logging"] = False
    return config


def sqlite_at_head(path: Path) -> bool:
    """Whether the SQLite file exists and its schema is at SCHEMA_HEAD (read-only check)."""
    if not path.exists():
        return False
    with (
        contextlib.suppress(sqlite3.Error),
        contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db,
    ):
        row = db.execute("SELECT version_num FROM alembic_version").fetchone()
        return row is not None and row[0] == SCHEMA_HEAD
    return False


def upgrade(url: str, lock_path: Path | None = None) -> None:
    """Blocking (Alembic drives its own event loop): call it from a thread inside the app.

    With `lock_path`, processes starting together (several workers on one SQLite file) take
    turns: the first migrates, the others then find the schema at head. Without the lock two
    workers could both try to create the tables, and one would fail to start.
    """
    from alembic import command

    if lock_path is None:
        command.upgrade(alembic_config(url), "head")
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            command.upgrade(alembic_config(url), "head")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
