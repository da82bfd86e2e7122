"""Concurrent writers on SQLite queue; none fails (bench/ saw "database is locked" 500s under load)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from .support import Server, bearer, sign
from .test_stream import make_discussion

pytestmark = pytest.mark.slow


async def test_concurrent_new_users_and_posts_never_fail(start_server: Callable[..., Server]) -> None:
    server = start_server(PARLEY_RATE_LIMIT_PER_MIN="100000")
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as client:
        discussion = await make_discussion(client, server, sign("owner"))
        path = f"/api/discussions/{discussion}/responses"

        async def newcomer_posts(i: int) -> int:
            # A user the server has never seen: an insert into users, then a post.
            token = sign(f"poster-{i}")
            r = await client.post(path, json={"body": f"hello {i}"}, headers=bearer(token))
            return r.status_code

        async def newcomer_follows(i: int) -> int:
            # Another newcomer: reads the discussion, then writes a follow.
            r = await client.put(f"/api/discussions/{discussion}/follow", headers=bearer(sign(f"reader-{i}")))
            return r.status_code

        statuses = await asyncio.gather(
            *(newcomer_posts(i) for i in range(150)), *(newcomer_follows(i) for i in range(150))
        )
    assert statuses.count(201) == 150 and statuses.count(200) == 150, sorted(set(statuses))
