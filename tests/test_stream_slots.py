"""The per-user cap on open streams (app/core/stream_slots.py), in-process: taken when a session is
made, kept across a WebSocket `resume`, given back on close or when a session is collected
without being closed (a Quart body that never started)."""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from quart import Quart

from app.auth import Identity
from app.core.services import Services
from app.core.stream_slots import TooManyStreams
from app.main import create_app
from app.settings import Settings

from .support import TEST_JWT_SECRET


@pytest.fixture
async def parley(tmp_path: Path) -> AsyncIterator[Services]:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}",
        jwt_secret=TEST_JWT_SECRET,
        data_dir=tmp_path / ".parley",
        max_streams_per_user=2,
    )
    app: Quart = create_app(settings)
    async with app.test_app():
        yield app.extensions["parley"]


def alice() -> Identity:
    return Identity("alice", "Alice", frozenset(), time.time() + 3600)


async def test_sessions_take_and_give_back_slots(parley: Services) -> None:
    slots = parley.stream_slots
    first = parley.node.open_session(alice(), ["d1"])
    second = parley.node.open_session(alice(), ["d1"])
    with pytest.raises(TooManyStreams) as refused:
        parley.node.open_session(alice(), ["d1"])
    assert refused.value.status == 429 and refused.value.code == "too_many_streams"
    assert refused.value.retry_after_s >= 1
    await first.open(None)
    await first.resume("garbage")  # a resume keeps the connection's slot
    assert slots.open_count("alice") == 2
    first.close()
    first.close()  # twice is once
    assert slots.open_count("alice") == 1
    # Never opened nor closed, then dropped: the slot comes back when it is collected.
    del second
    gc.collect()
    assert slots.open_count("alice") == 0
    parley.node.open_session(alice(), ["d1"]).close()
