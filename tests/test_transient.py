"""A stream request while Redis is down never gets an answer that makes a client give up.

By the WHATWG rules an EventSource that gets a 503 on reconnecting never reconnects again; so
`GET /stream` answers 200 `text/event-stream` with a `retry:` hint and ends (both stream paths).
A WebSocket is closed with 1013 (try again later); a long-poll gets 503 with Retry-After, which
fetch-based pollers honour.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from .support import RedisServer, Server, bearer, redis_server, sign
from .test_stream import make_discussion
from .test_ws_poll import ws_url

pytestmark = pytest.mark.slow


@pytest.fixture
def private(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


async def test_a_stream_resumed_while_redis_is_down_is_told_to_retry_not_refused(
    private: RedisServer, start_server: Callable[..., Server], stream_path: dict[str, str]
) -> None:
    server = start_server(REDIS_URL=private.url, PARLEY_REDIS_PREFIX="tr", **stream_path)
    alice = sign("alice")
    async with httpx.AsyncClient(timeout=10) as client:
        discussion = await make_discussion(client, server, alice)
        listed = await client.get(f"{server.url}/api/discussions/{discussion}/responses", headers=bearer(alice))
        cursor = listed.json()["cursor"]
        private.stop(signal.SIGKILL)
        # As an EventSource reconnects: with its Last-Event-ID.
        headers = {**bearer(alice), "Last-Event-ID": cursor}
        response = await client.get(f"{server.url}/stream", params={"discussion": discussion}, headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.text.splitlines()
        retry = [int(line.removeprefix("retry:").strip()) for line in lines if line.startswith("retry:")]
        assert retry and 1_000 <= retry[0] <= 10_000
        assert not any(line.startswith(("id:", "data:")) for line in lines)  # Last-Event-ID stays as it was

        # A long-poll (fetch) gets a retryable 503; a WebSocket the 1013 close.
        polled = await client.get(
            f"{server.url}/poll", params={"discussion": discussion, "cursor": cursor}, headers=bearer(alice)
        )
        assert polled.status_code == 503 and "Retry-After" in polled.headers
    with pytest.raises(ConnectionClosed) as closed:
        async with connect(
            ws_url(server, [discussion], last_event_id=cursor), additional_headers=bearer(alice), open_timeout=10
        ) as ws:
            for _ in range(5):
                await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
