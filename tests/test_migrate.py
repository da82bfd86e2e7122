"""Migrations: the start-up shortcut must agree with Alembic about where the schema stands."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic.script import ScriptDirectory

from app.infra import migrate


def test_schema_head_is_alembics_head() -> None:
    scripts = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))
    assert scripts.get_current_head() == migrate.SCHEMA_HEAD


def test_a_sqlite_file_is_at_head_only_after_upgrading(tmp_path: Path) -> None:
    path = tmp_path / "parley.db"
    assert not migrate.sqlite_at_head(path)  # missing
    path.touch()
    assert not migrate.sqlite_at_head(path)  # empty: no alembic_version table
    migrate.upgrade(f"sqlite+aiosqlite:///{path}")
    assert migrate.sqlite_at_head(path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE alembic_version SET version_num = '0001'")
    assert not migrate.sqlite_at_head(path)  # behind: start-up runs Alembic
