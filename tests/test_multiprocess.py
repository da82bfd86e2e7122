"""Several server processes sharing one Redis: events cross processes, cursors move with clients."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from .support import ROOT, Server, free_port, server_env, sign
from .test_stream import events, make_discussion, open_stream, post

pytestmark = pytest.mark.slow


@pytest.fixture
def pair(start_server: Callable[..., Server], redis_url: str, redis_prefix: str, tmp_path: Path) -> list[Server]:
    # One database and one Redis, as two servers of one deployment share them.
    return [start_server(tmp_path, REDIS_URL=redis_url, PARLEY_REDIS_PREFIX=redis_prefix) for _ in range(2)]


async def test_a_post_on_one_process_reaches_readers_on_the_other(pair: list[Server]) -> None:
    a, b = pair
    alice, bob = sign("alice"), sign("bob")
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, a, alice)
        async with open_stream(b, bob, [discussion]) as on_b, open_stream(a, alice, [discussion]) as on_a:
            posted = [await post(client, [a, b][i % 2], alice, discussion, f"r{i}") for i in range(10)]
            got_b = await events(on_b, 10, timeout_s=5)
            got_a = await events(on_a, 10, timeout_s=5)
    expected = [p["id"] for p in posted]
    assert [e.json["payload"]["response"]["id"] for e in got_b] == expected
    assert [e.id for e in got_a] == [e.id for e in got_b]  # one log, one order, same cursors


async def test_a_client_moving_between_processes_misses_nothing_and_sees_nothing_twice(pair: list[Server]) -> None:
    a, b = pair
    alice = sign("alice")
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, a, alice)
        async with open_stream(a, alice, [discussion]) as stream:
            first = [await post(client, a, alice, discussion, f"first {i}") for i in range(5)]
            seen = await events(stream, 5)
        # Disconnected: posts land on both processes meanwhile.
        missed = [await post(client, [a, b][i % 2], alice, discussion, f"missed {i}") for i in range(6)]
        async with open_stream(b, alice, [discussion], headers={"Last-Event-ID": seen[-1].id or ""}) as stream:
            replayed = await events(stream, 6)
            live = await post(client, a, alice, discussion, "live")
            [after] = await events(stream, 1)
    all_ids = [e.json["payload"]["response"]["id"] for e in [*seen, *replayed, after]]
    assert all_ids == [p["id"] for p in [*first, *missed, live]]
    assert len(set(all_ids)) == len(all_ids)


async def test_a_restarted_process_resumes_its_clients(pair: list[Server]) -> None:
    a, b = pair
    alice = sign("alice")
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, a, alice)
        async with open_stream(a, alice, [discussion]) as stream:
            await post(client, a, alice, discussion, "before")
            [seen] = await events(stream, 1)
        a.stop()
        missed = [await post(client, b, alice, discussion, f"while down {i}") for i in range(3)]
        a.start()
        async with open_stream(a, alice, [discussion], last_event_id=seen.id or "") as stream:
            replayed = await events(stream, 3)
    assert [e.json["payload"]["response"]["id"] for e in replayed] == [m["id"] for m in missed]


def test_the_embedded_log_refuses_a_second_process(start_server: Callable[..., Server], tmp_path: Path) -> None:
    start_server(tmp_path)
    second = Server(free_port(), server_env(tmp_path, 0), tmp_path)
    second.env["PORT"] = str(second.port)
    with pytest.raises(RuntimeError):
        second.start()
    assert "embedded log lives in one process" in second.log()


def test_several_workers_need_redis(tmp_path: Path) -> None:
    env = server_env(tmp_path, free_port(), WEB_CONCURRENCY="2")
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "REDIS_URL" in result.stderr
