"""NFR-015: a user past the per-minute limit gets 429 with Retry-After; nothing is stored."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest

from .support import Server, bearer, sign
from .test_stream import make_discussion

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", ["embedded", "redis"])
async def test_posting_past_the_limit_is_refused(
    backend: str, start_server: Callable[..., Server], request: pytest.FixtureRequest
) -> None:
    env = {"PARLEY_RATE_LIMIT_PER_MIN": "5"}
    if backend == "redis":
        env |= {
            "REDIS_URL": request.getfixturevalue("redis_url"),
            "PARLEY_REDIS_PREFIX": request.getfixturevalue("redis_prefix"),
        }
    server = start_server(**env)
    alice, bob = sign("alice"), sign("bob")
    async with httpx.AsyncClient(base_url=server.url) as client:
        discussion = await make_discussion(client, server, alice)
        path = f"/api/discussions/{discussion}/responses"
        # Limits count per calendar minute: don't straddle one.
        if time.time() % 60 > 50:
            await asyncio.sleep(61 - time.time() % 60)
        statuses = [
            (await client.post(path, json={"body": f"{i}"}, headers=bearer(alice))).status_code for i in range(5)
        ]
        assert statuses == [201] * 5
        refused = await client.post(path, json={"body": "one too many"}, headers=bearer(alice))
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        # Limits are per user.
        assert (await client.post(path, json={"body": "bob's"}, headers=bearer(bob))).status_code == 201
        bodies = [r["body"] for r in (await client.get(path, headers=bearer(alice))).json()["responses"]]
    assert "one too many" not in bodies
    assert len(bodies) == 6
