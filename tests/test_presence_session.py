"""The session methods the WebSocket transport calls (`set_status`, `set_typing`), in-process on
the embedded backend: what one connection does reaches another connection's session."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from quart import Quart

from app.auth import Identity
from app.core.services import Services
from app.core.session import Deliver, End, StreamSession
from app.errors import NotFound
from app.log.events import Event
from app.main import create_app
from app.settings import Settings

from .support import TEST_JWT_SECRET


@pytest.fixture
async def parley(tmp_path: Path) -> AsyncIterator[Services]:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}",
        jwt_secret=TEST_JWT_SECRET,
        data_dir=tmp_path / ".parley",
        presence_grace_s=0.2,
        presence_sweep_s=0.1,
    )
    app: Quart = create_app(settings)
    async with app.test_app():
        yield app.extensions["parley"]


def who(user_id: str) -> Identity:
    return Identity(user_id, user_id.title(), frozenset(), time.time() + 3600)


async def next_of(session: StreamSession, event_type: str, user_id: str = "alice") -> Event:
    """The next event of that type about that user; generous deadline, other events skipped."""
    async with asyncio.timeout(10):
        while True:
            step = await session.next()
            assert not isinstance(step, End), step
            for event in step.events if isinstance(step, Deliver) else []:
                if event.type == event_type and event.as_dict()["user"]["id"] == user_id:
                    return event


async def test_status_and_typing_from_one_session_reach_another(parley: Services) -> None:
    bob = parley.node.open_session(who("bob"), ["d1"])
    alice = parley.node.open_session(who("alice"), ["d1", "d2"])
    try:
        await bob.open(None)
        await alice.open(None)
        joined = (await next_of(bob, "user_joined")).as_dict()
        assert joined["user"] == {"id": "alice", "name": "Alice"}
        await alice.set_typing("d1", True)
        await alice.set_typing("d1", True)
        started = (await next_of(bob, "typing_started")).as_dict()
        assert (started["user"]["id"], started["discussion_id"]) == ("alice", "d1")
        with pytest.raises(NotFound):
            await alice.set_typing("d3", True)  # not one of the session's discussions
        await alice.set_status("away")
        changed = (await next_of(bob, "presence_changed")).as_dict()
        assert changed["payload"] == {"status": "away"}
        assert (await parley.presence.snapshot("d2")).as_json()["participants"] == [
            {"id": "alice", "name": "Alice", "status": "away"}
        ]
        # A second tab of Alice's: she is online again, and no second join.
        tab = parley.node.open_session(who("alice"), ["d1"])
        await tab.open(None)
        back = (await next_of(bob, "presence_changed")).as_dict()
        assert back["payload"] == {"status": "online"}
        tab.close()
        alice.close()
        left = (await next_of(bob, "user_left")).as_dict()  # after the grace period
        assert left["user"]["id"] == "alice"
        assert (await parley.presence.snapshot("d1")).as_json()["count"] == 1
    finally:
        alice.close()
        bob.close()
