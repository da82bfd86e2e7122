"""Operations: health, readiness when Redis goes away and comes back, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from .support import Server, bearer, private_redis, sign
from .test_stream import events, make_discussion, open_stream, post

pytestmark = pytest.mark.slow


async def wait_status(client: httpx.AsyncClient, url: str, status: int, timeout_s: float = 20) -> httpx.Response:
    async with asyncio.timeout(timeout_s):
        while True:
            response = await client.get(url)
            if response.status_code == status:
                return response
            await asyncio.sleep(0.1)


async def test_readiness_follows_redis_and_streams_recover(start_server: Callable[..., Server]) -> None:
    alice = sign("alice")
    with private_redis() as redis_url:
        server = start_server(REDIS_URL=redis_url)
        port = redis_url.rsplit(":", 1)[1].split("/")[0]
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            discussion = await make_discussion(client, server, alice)
            metrics = (await client.get("/metrics")).text
            assert "parley_delivery_latency_seconds_bucket" in metrics
            assert "parley_connections" in metrics
    # Redis is gone: not ready, but alive.
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        down = await wait_status(client, "/readyz", 503)
        assert down.json()["checks"]["event_log"] == "unreachable"
        assert (await client.get("/healthz")).status_code == 200
        # A post is stored with its event in the outbox (app/core/outbox.py), relayed once the log is back:
        # not a hang, not a 500, and not a 503 the client would retry.
        r = await client.post(f"/api/discussions/{discussion}/responses", json={"body": "x"}, headers=bearer(alice))
        assert r.status_code == 201, r.text
        during = r.json()["id"]
        with private_redis(port=int(port)):
            await wait_status(client, "/readyz", 200)
            # Redis came back empty: the first append mints the log's new epoch, and the server's
            # reader, on noticing, ends the streams open at that moment (their resume is told
            # sync_required: tests/test_redis_loss.py). A client reconnects, as EventSource does.
            await post(client, server, alice, discussion, "after the outage")
            seen: list[str] = []
            for attempt in range(3):
                seen = []
                try:
                    async with open_stream(server, alice, [discussion]) as stream:
                        await asyncio.sleep(0.5)
                        posted = await post(client, server, alice, discussion, f"live again {attempt}")
                        while posted["id"] not in seen:  # the relayed one may come first
                            [event] = await events(stream, 1, timeout_s=15)
                            seen.append(event.json["payload"]["response"]["id"])
                    break
                except httpx.RemoteProtocolError:
                    continue  # ended by the reader's epoch change: reconnect
            assert seen and seen[-1] == posted["id"]
            assert len(seen) <= 2 and set(seen) <= {during, posted["id"]}, seen
