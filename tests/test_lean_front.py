"""The lean front (app/transports/lean_http.py, lean_sse.py) on the wire, with raw sockets:
framing, headers, bad and slow requests, and connections handed over to Hypercorn.

The behaviour both paths share (events, resume, auth, heartbeats, expiry, disconnects, slow
readers) is tested on both in test_stream.py and test_slow_consumer.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
import trustme

from app.transports.lean_http import MAX_HEAD_BYTES

from .support import START_TIMEOUT_S, Server, SseReader, bearer, free_port, server_env, sign, wait_for_port
from .test_stream import PRESENCE_EVENTS, events, make_discussion, open_stream, post

pytestmark = pytest.mark.slow

# A short slowloris deadline (the default is 5 s), so its test need not wait long; complete
# heads arrive in one write, far within it.
HEADER_TIMEOUT_S = 1.0
# Generous: every wait below ends as soon as the server acts; this only bounds a failure.
WAIT_S = HEADER_TIMEOUT_S + 15


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("lean")
    port = free_port()
    server = Server(
        port,
        server_env(
            workdir,
            port,
            PARLEY_LEAN_STREAM="1",
            PARLEY_RATE_LIMIT_PER_MIN="100000",
            PARLEY_MAX_STREAMS_PER_USER="1000",
            PARLEY_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
        ),
        workdir,
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def discussion(server: Server) -> str:
    r = httpx.post(server.url + "/api/discussions", json={"title": "Wire"}, headers=bearer(sign("alice")))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.settimeout(WAIT_S)
    return sock


def read_until(sock: socket.socket, marker: bytes, data: bytes = b"") -> bytes:
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def head_and_body(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def stream_request(discussion: str, token: str, extra: str = "") -> bytes:
    return (
        f"GET /stream?discussion={discussion} HTTP/1.1\r\nHost: test\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n{extra}\r\n"
    ).encode()


def test_stream_headers_and_chunked_framing(server: Server, discussion: str) -> None:
    with connect(server) as sock:
        sock.sendall(stream_request(discussion, sign("alice")))
        data = read_until(sock, b": connected\n\n")
        status, headers, body = head_and_body(data)
        assert status == 200
        assert headers["content-type"] == "text/event-stream; charset=utf-8"
        assert headers["cache-control"] == "no-cache, no-transform"
        assert headers["x-accel-buffering"] == "no"
        assert headers["transfer-encoding"] == "chunked"
        assert "content-length" not in headers
        # The first chunk: the preamble, then whatever the stream had to catch up on (here at
        # most presence events, such as the reader's own arrival).
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        while len(rest) < size + 2:
            rest = read_until(sock, b"\r\n", rest + sock.recv(65536))
        first, after = rest[:size], rest[size:]
        assert after == b"\r\n"
        preamble = b"retry: 2000\n: connected\n\n"
        assert first.startswith(preamble)
        for frame in first[len(preamble) :].split(b"\n\n")[:-1]:
            assert frame.decode().split("\n")[1].removeprefix("event: ") in PRESENCE_EVENTS
        # Then one chunk per event, each a complete SSE frame.
        r = httpx.post(
            f"{server.url}/api/discussions/{discussion}/responses", json={"body": "framed"}, headers=bearer(sign("bob"))
        )
        assert r.status_code == 201
        # One chunk per event, each a complete SSE frame; presence events may come first.
        buffer = b""
        while True:
            buffer = read_until(sock, b"\n\n\r\n", buffer)
            size_line, _, rest = buffer.partition(b"\r\n")
            size = int(size_line, 16)
            frame, buffer = rest[:size], rest[size:]
            assert buffer.startswith(b"\r\n")
            buffer = buffer[2:]
            lines = frame.decode().split("\n")
            if lines[1].removeprefix("event: ") not in PRESENCE_EVENTS:
                break
        assert lines[0].startswith("id: ") and lines[1] == "event: response_posted"
        assert json.loads(lines[2].removeprefix("data: "))["payload"]["response"]["body"] == "framed"
        assert frame.endswith(b"\n\n")


def test_errors_before_streaming_are_json(server: Server, discussion: str) -> None:
    cases = [
        ("", 401, "unauthenticated"),
        ("Authorization: Bearer not.a.jwt\r\n", 401, "invalid_token"),
    ]
    for extra, status, code in cases:
        with connect(server) as sock:
            sock.sendall(f"GET /stream?discussion={discussion} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode())
            got, headers, body = head_and_body(read_all(sock))
            assert (got, json.loads(body)["error"]["code"]) == (status, code)
            assert headers["content-type"] == "application/json"
    many = "&".join(f"discussion=d{i}" for i in range(51))
    with connect(server) as sock:
        sock.sendall(f"GET /stream?{many} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {sign('a')}\r\n\r\n".encode())
        got, _, body = head_and_body(read_all(sock))
        assert (got, json.loads(body)["error"]["code"]) == (422, "invalid_field")
    # The cookie works as well as the header.
    with connect(server) as sock:
        cookie = f"Cookie: theme=dark; parley_token={sign('alice')}\r\n"
        sock.sendall(f"GET /stream?discussion=nope HTTP/1.1\r\nHost: t\r\n{cookie}\r\n".encode())
        got, _, body = head_and_body(read_all(sock))
        assert (got, json.loads(body)["error"]["code"]) == (404, "not_found")


def test_malformed_request_line_gets_400_and_is_closed(server: Server) -> None:
    for garbage in (b"GARBAGE\r\n\r\n", b"GET /stream HTTP/9.9 extra\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\r\n\r\n"):
        with connect(server) as sock:
            sock.sendall(garbage)
            status, _, body = head_and_body(read_all(sock))
            assert status == 400, garbage
            assert json.loads(body)["error"]["code"] == "bad_request"


def test_oversized_head_gets_431_and_is_closed(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\nX-Padding: " + b"x" * MAX_HEAD_BYTES + b"\r\n\r\n")
        status, _, body = head_and_body(read_all(sock))
        assert status == 431
        assert json.loads(body)["error"]["code"] == "headers_too_large"


def test_slowloris_head_is_closed(server: Server) -> None:
    opened = time.monotonic()
    with connect(server) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        # Never finished: the server closes it once PARLEY_HEADER_TIMEOUT_S has passed (recv
        # returns b"" then; the socket timeout only bounds a failure), and not before.
        assert read_all(sock) == b""
        assert time.monotonic() - opened >= HEADER_TIMEOUT_S * 0.9


def test_pipelined_requests_are_handed_to_hypercorn(server: Server, discussion: str) -> None:
    token = sign("alice")
    body = json.dumps({"body": "pipelined"})
    requests = (
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
        + f"POST /api/discussions/{discussion}/responses HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()
        + f"GET /api/discussions/{discussion} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    with connect(server) as sock:
        sock.sendall(requests)
        data = read_all(sock)
    responses = data.split(b"HTTP/1.1 ")[1:]
    statuses = [int(response.split(b" ", 1)[0]) for response in responses]
    assert statuses == [200, 201, 200]
    assert b"hypercorn" in data.lower()  # answered by Hypercorn, not the lean front
    assert b'"body":"pipelined"' in responses[1]


def test_http2_prior_knowledge_is_handed_to_hypercorn(server: Server) -> None:
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    connection.send_headers(
        1, [(":method", "GET"), (":path", "/healthz"), (":scheme", "http"), (":authority", "t")], end_stream=True
    )
    status, ended = None, False
    with connect(server) as sock:
        sock.sendall(connection.data_to_send())
        while not ended:
            data = sock.recv(65536)
            assert data, "closed before the response ended"
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers)[b":status"]
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
            sock.sendall(connection.data_to_send())
    assert status == b"200"


def test_http10_stream_is_served_by_hypercorn(server: Server, discussion: str) -> None:
    with connect(server) as sock:
        sock.sendall(stream_request(discussion, sign("alice")).replace(b"HTTP/1.1", b"HTTP/1.0"))
        status, headers, _ = head_and_body(read_until(sock, b"\r\n\r\n"))
        assert status == 200
        assert headers["content-type"].startswith("text/event-stream")
        assert "transfer-encoding" not in headers  # HTTP/1.0 has no chunked encoding


async def test_several_workers_serve_streams_on_one_port(
    start_server: Callable[..., Server], redis_url: str, redis_prefix: str
) -> None:
    server = start_server(REDIS_URL=redis_url, PARLEY_REDIS_PREFIX=redis_prefix, WEB_CONCURRENCY="2")
    alice = sign("alice")
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, server, alice)
        async with contextlib.AsyncExitStack() as stack:
            streams = [await stack.enter_async_context(open_stream(server, alice, [discussion])) for _ in range(6)]
            posted = await post(client, server, alice, discussion, "to every worker")
            for stream in streams:
                [event] = await events(stream, 1)
                assert event.json["payload"]["response"]["id"] == posted["id"]
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == 0


def test_websocket_upgrade_is_handed_to_hypercorn(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"GET /stream HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        _, headers, _ = head_and_body(read_until(sock, b"\r\n\r\n"))
        # Quart decides (no WebSocket route here); the lean front never answers an upgrade.
        assert headers["server"].startswith("hypercorn")


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    """A server with PARLEY_TLS_CERT/KEY (readiness is checked over TLS by the test itself)."""
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    cert, key, ca = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    certificate.cert_chain_pems[0].write_to_path(str(cert))
    certificate.private_key_pem.write_to_path(str(key))
    authority.cert_pem.write_to_path(str(ca))
    port = free_port()
    server = Server(port, server_env(tmp_path, port, PARLEY_TLS_CERT=str(cert), PARLEY_TLS_KEY=str(key)), tmp_path)
    server.process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1"],
        cwd=tmp_path,
        env=server.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, process=server.process)
        yield server, ca
    finally:
        server.stop()


async def test_with_tls_hypercorn_serves_everything_including_http2(tls_server: tuple[Server, Path]) -> None:
    server, ca = tls_server
    context = ssl.create_default_context(cafile=str(ca))
    alice = sign("alice")
    base = f"https://127.0.0.1:{server.port}"
    async with httpx.AsyncClient(http2=True, verify=context, timeout=10) as client:
        async with asyncio.timeout(START_TIMEOUT_S):
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(base + "/readyz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        r = await client.post(base + "/api/discussions", json={"title": "TLS"}, headers=bearer(alice))
        assert r.status_code == 201 and r.http_version == "HTTP/2"
        discussion = r.json()["id"]
        params = {"discussion": discussion}
        async with client.stream("GET", base + "/stream", params=params, headers=bearer(alice)) as stream:
            assert stream.status_code == 200 and stream.http_version == "HTTP/2"
            reader = SseReader(stream.aiter_raw())
            url = f"{base}/api/discussions/{discussion}/responses"
            assert (await client.post(url, json={"body": "over h2"}, headers=bearer(alice))).status_code == 201
            [event] = await events(reader, 1)
            assert event.json["payload"]["response"]["body"] == "over h2"


async def test_clients_vanishing_mid_fanout_leave_the_hub_serving(server: Server, discussion: str) -> None:
    """Regression: a write to a transport that closed under us (a reset, before its
    connection_lost ran) must not raise into the hub's dispatch and stop it for everyone."""
    alice = sign("alice")
    async with httpx.AsyncClient(timeout=10) as client, open_stream(server, alice, [discussion]) as survivor:
        for _round in range(3):
            doomed = []
            for _ in range(30):
                sock = connect(server)
                sock.sendall(stream_request(discussion, alice))
                read_until(sock, b": connected")
                doomed.append(sock)
            posting = asyncio.create_task(post_many(client, server, alice, discussion, 20))
            for sock in doomed:
                # SO_LINGER 0: close with a reset, so the server's next write or read fails.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.close()
                await asyncio.sleep(0)
            posted = await posting
            received = await events(survivor, len(posted), timeout_s=15)
            assert [e.json["payload"]["response"]["id"] for e in received] == [p["id"] for p in posted]
        last = await post(client, server, alice, discussion, "still serving")
        [event] = await events(survivor, 1)
        assert event.json["payload"]["response"]["id"] == last["id"]


async def post_many(
    client: httpx.AsyncClient, server: Server, token: str, discussion: str, count: int
) -> list[dict[str, Any]]:
    return [await post(client, server, token, discussion, f"fan-out {i}") for i in range(count)]


async def test_shutdown_ends_open_streams_cleanly(start_server: Callable[..., Server]) -> None:
    server = start_server(PARLEY_LEAN_STREAM="1")
    alice = sign("alice")
    async with httpx.AsyncClient() as client:
        discussion = await make_discussion(client, server, alice)
    async with open_stream(server, alice, [discussion]) as stream:
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        # The body ends with its last chunk (a clean end: the browser reconnects elsewhere).
        with pytest.raises(StopAsyncIteration):
            await events(stream, 1, timeout_s=WAIT_S)
    assert server.process.wait(30) == 0
