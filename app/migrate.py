"""Run Alembic migrations from code (the embedded default migrates its SQLite file on start)."""

from __future__ import annotations

import fcntl
from pathlib import Path

from alembic.config import Config

from alembic import command

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    config.attributes["url"] = url
    config.attributes["configure_logging"] = False
    return config


def upgrade(url: str, lock_path: Path | None = None) -> None:
    """Blocking (Alembic drives its own event loop): call it from a thread inside the app.

    With `lock_path`, processes starting together (several workers on one SQLite file) take
    turns: the first migrates, the others then find the schema at head. Without the lock two
    workers could both try to create the tables, and one would fail to start.
    """
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
