"""Run Alembic migrations from code (the embedded default migrates its SQLite file on start)."""

from __future__ import annotations

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


def upgrade(url: str) -> None:
    """Blocking (Alembic drives its own event loop): call it from a thread inside the app."""
    command.upgrade(alembic_config(url), "head")
