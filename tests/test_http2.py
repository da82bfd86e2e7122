"""HTTP/2 over TLS (and h2c), and WSS, on a real server with a throwaway `trustme` certificate.

PITFALLS, "SSE and HTTP/2": a connection-specific header such as `Transfer-Encoding` on a stream
response makes h2 raise inside Hypercorn and the stream silently never starts; these tests
would hang on the first event if that ever came back.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from websockets.asyncio.client import connect

from .support import START_TIMEOUT_S, Server, SseReader, bearer, free_port, server_env, sign, wait_for_port
from .test_stream import PRESENCE_EVENTS, events

pytestmark = pytest.mark.slow


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(ca: trustme.CA, tmp_path: Path) -> Iterator[Server]:
    """`support.Server` checks readiness over plain http; this one over https with our CA."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    port = free_port()
    env = server_env(tmp_path, port, PARLEY_TLS_CERT=str(cert_path), PARLEY_TLS_KEY=str(key_path))
    server = Server(port, env, tmp_path)
    server.process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1"],
        cwd=tmp_path,
        env=env,
        stdout=server.log_path.open("ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, process=server.process)
        deadline = time.monotonic() + START_TIMEOUT_S
        while httpx.get(f"https://127.0.0.1:{port}/readyz", verify=client_context(ca)).status_code != 200:
            assert time.monotonic() < deadline, "server never became ready"
            time.sleep(0.05)
        yield server
    finally:
        server.stop()


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def stream_one_event(client: httpx.AsyncClient, base: str) -> str:
    """Open /stream, post a response on the same client, return the HTTP version the stream used."""
    alice = sign("alice")
    created = await client.post(base + "/api/discussions", json={"title": "h2"}, headers=bearer(alice))
    discussion = created.json()["id"]
    async with client.stream("GET", base + "/stream", params={"discussion": discussion}, headers=bearer(alice)) as r:
        assert r.status_code == 200
        assert "transfer-encoding" not in r.headers
        reader = SseReader(r.aiter_raw())
        # Multiplexed: this POST shares the connection with the open stream.
        posted = await client.post(
            f"{base}/api/discussions/{discussion}/responses", json={"body": "over h2"}, headers=bearer(alice)
        )
        assert posted.http_version == r.http_version
        [event] = await events(reader, 1)
        assert event.event == "response_posted"
        assert event.json["payload"]["response"]["id"] == posted.json()["id"]
        return r.http_version


async def test_sse_over_http2_with_tls(tls_server: Server, ca: trustme.CA) -> None:
    async with httpx.AsyncClient(http2=True, verify=client_context(ca), timeout=10) as client:
        version = await stream_one_event(client, f"https://127.0.0.1:{tls_server.port}")
    assert version == "HTTP/2"


async def test_sse_over_h2c_prior_knowledge(start_server: Callable[..., Server]) -> None:
    server = start_server()
    async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as client:
        version = await stream_one_event(client, server.url)
    assert version == "HTTP/2"


async def test_wss(tls_server: Server, ca: trustme.CA) -> None:
    alice = sign("alice")
    base = f"https://127.0.0.1:{tls_server.port}"
    async with httpx.AsyncClient(verify=client_context(ca)) as client:
        discussion = (await client.post(base + "/api/discussions", json={"title": "wss"}, headers=bearer(alice))).json()
        url = f"wss://127.0.0.1:{tls_server.port}/ws?discussion={discussion['id']}"
        async with connect(url, ssl=client_context(ca), additional_headers=bearer(alice)) as ws:
            assert json.loads(await ws.recv())["type"] == "hello"
            await client.post(
                f"{base}/api/discussions/{discussion['id']}/responses", json={"body": "secure"}, headers=bearer(alice)
            )
            async with asyncio.timeout(5):
                while (message := json.loads(await ws.recv()))["type"] in {"heartbeat", *PRESENCE_EVENTS}:
                    pass
    assert message["payload"]["response"]["body"] == "secure"
