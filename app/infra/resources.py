"""Where the files Parley serves and runs from live: the page (`static/`) and the migrations
(`alembic/`). This module alone decides.

A checkout keeps them at the top level, next to `app/`; a wheel carries them inside the package
as `app/_static` and `app/_migrations` (`hatch_build.py` puts them there). An editable install
reads the checkout's own files, so an edit shows at once.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # app/, two levels up from app/infra/resources.py
CHECKOUT_DIR = PACKAGE_DIR.parent


def _located(packaged: str, checkout: str) -> Path:
    inside = PACKAGE_DIR / packaged
    return inside if inside.is_dir() else CHECKOUT_DIR / checkout


STATIC_DIR = _located("_static", "static")
MIGRATIONS_DIR = _located("_migrations", "alembic")
