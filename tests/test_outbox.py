"""The transactional outbox (app/core/outbox.py): a change committed while the event log refuses
appends still reaches every reader, once, when the log takes appends again.

The fault is real: Redis's ACL takes XADD away from the servers' user (only append.lua uses
XADD), so every append fails after the database commit while everything else works.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from .support import RedisServer, Server, SseReader, bearer, redis_server, sign
from .test_stream import make_discussion, open_stream

pytestmark = pytest.mark.slow


@pytest.fixture
def private(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def refuse_appends(server: RedisServer, refused: bool) -> None:
    with redis.Redis.from_url(server.url) as admin:
        admin.execute_command("ACL", "SETUSER", "default", "-xadd" if refused else "+xadd")


def outbox_rows(workdir: Path) -> int:
    with sqlite3.connect(workdir / "parley.db") as db:
        return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])


async def until_relayed(workdir: Path, timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while outbox_rows(workdir):
            await asyncio.sleep(0.1)


async def responses_until(reader: SseReader, marker: str, timeout_s: float = 20.0) -> list[tuple[str, str]]:
    """(event type, response id) of every response event up to the one whose body is `marker`."""
    seen: list[tuple[str, str]] = []
    async with asyncio.timeout(timeout_s):
        while True:
            event = await reader.next_event()
            if not event.event.startswith("response_"):
                continue
            response = event.json["payload"]["response"]
            seen.append((event.event, response["id"]))
            if response["body"] == marker:
                return seen


async def test_a_post_and_an_edit_committed_while_appends_fail_reach_readers_once(
    private: RedisServer, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    # Two servers on one database and one Redis: both relays see the same outbox rows.
    a, b = (start_server(tmp_path, REDIS_URL=private.url, PARLEY_REDIS_PREFIX="ob") for _ in range(2))
    alice = sign("alice")
    async with httpx.AsyncClient(timeout=10) as client:
        discussion = await make_discussion(client, a, alice)
        listed = await client.get(f"{a.url}/api/discussions/{discussion}/responses", headers=bearer(alice))
        cursor = listed.json()["cursor"]
        refuse_appends(private, True)
        try:
            url = f"{a.url}/api/discussions/{discussion}/responses"
            first = await client.post(url, json={"body": "while down", "client_id": "c1"}, headers=bearer(alice))
            # The response is stored: the caller is told so (its event is on its way).
            assert first.status_code == 201, first.text
            response_id = first.json()["id"]
            retry = await client.post(url, json={"body": "while down", "client_id": "c1"}, headers=bearer(alice))
            assert retry.status_code == 200 and retry.json()["id"] == response_id
            edited = await client.patch(
                f"{b.url}/api/responses/{response_id}", json={"body": "edited while down"}, headers=bearer(alice)
            )
            assert edited.status_code == 200, edited.text
            assert outbox_rows(tmp_path) == 2
        finally:
            refuse_appends(private, False)
        await until_relayed(tmp_path)  # appended rows are deleted: the table stays small
        async with open_stream(b, alice, [discussion], headers={"Last-Event-ID": cursor}) as reader:
            marker = await client.post(url, json={"body": "marker"}, headers=bearer(alice))
            assert marker.status_code == 201
            seen = await responses_until(reader, "marker")
    assert seen == [
        ("response_posted", response_id),
        ("response_edited", response_id),
        ("response_posted", marker.json()["id"]),
    ]
