"""Protocol edges (issue 11, item 8), each with real sockets against a real server process:

- WebSocket over HTTP/2 (RFC 8441): every session's stream is ended, so one connection carries
  more than its 100 concurrent streams' worth of sessions (app/hypercorn_fixes.py, fix 1);
- a WebSocket frame the server cannot parse gets a Close frame (1002, or 1007 for invalid
  UTF-8) before TCP is dropped (RFC 6455 §7.1.7; fix 2);
- an unsupported `Sec-WebSocket-Version` gets 426 with `Sec-WebSocket-Version: 13` (fix 3);
- SIGTERM closes WebSockets with 1001 at once and ends SSE streams properly;
- over TLS/HTTP/2, SIGTERM ends every stream cleanly, then says GOAWAY (NO_ERROR), promptly;
  an idle HTTP/2 connection gets its GOAWAY too (fix 4).
"""

from __future__ import annotations

import base64
import json
import os
import select
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import httpx
import pytest
import trustme
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, Message, TextMessage

from .support import Server, bearer, sign
from .test_http2 import ca, client_context, tls_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

DEADLINE_S = 10.0


def make_discussion(base: str, token: str, verify: Any = True) -> str:
    created = httpx.post(base + "/api/discussions", json={"title": "edges"}, headers=bearer(token), verify=verify)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


class H2Client:
    """A minimal HTTP/2 client on a blocking socket: the `h2` state machine, events by stream."""

    def __init__(self, sock: socket.socket | ssl.SSLSocket, authority: str, scheme: str) -> None:
        self.sock = sock
        self.authority = authority.encode()
        self.scheme = scheme.encode()
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.events: list[h2.events.Event] = []
        self.eof = False
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def pump(self, timeout_s: float = 0.5) -> None:
        """Read what has arrived (waiting up to `timeout_s` for anything)."""
        ready, _, _ = select.select([self.sock], [], [], timeout_s)
        if not ready and not (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()):
            return
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
            return
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            self.events.append(event)
        self.flush()

    def wait_for(self, match: Callable[[h2.events.Event], bool]) -> h2.events.Event:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            for event in self.events:
                if match(event):
                    self.events.remove(event)
                    return event
            assert not self.eof, f"connection closed while waiting; got {self.events}"
            assert time.monotonic() < deadline, f"timed out; got {self.events}"
            self.pump()

    def request(self, method: str, path: str, headers: list[tuple[bytes, bytes]], *, end: bool = True) -> int:
        stream_id: int = self.conn.get_next_available_stream_id()
        pseudo = [(b":method", method.encode()), (b":scheme", self.scheme), (b":path", path.encode())]
        pseudo.append((b":authority", self.authority))
        self.conn.send_headers(stream_id, pseudo + headers, end_stream=end)
        self.flush()
        return stream_id

    def response_status(self, stream_id: int) -> dict[bytes, bytes]:
        event = self.wait_for(lambda e: isinstance(e, h2.events.ResponseReceived) and e.stream_id == stream_id)
        assert isinstance(event, h2.events.ResponseReceived)
        return dict(event.headers)

    def data(self, stream_id: int) -> bytes:
        event = self.wait_for(lambda e: isinstance(e, h2.events.DataReceived) and e.stream_id == stream_id)
        assert isinstance(event, h2.events.DataReceived)
        return bytes(event.data)

    def ended(self, stream_id: int) -> h2.events.Event:
        """The stream's end: StreamEnded (clean) or StreamReset (cut), whichever comes."""
        return self.wait_for(
            lambda e: isinstance(e, h2.events.StreamEnded | h2.events.StreamReset) and e.stream_id == stream_id
        )


class WsOverH2:
    """One RFC 8441 WebSocket session on an `H2Client`."""

    def __init__(self, client: H2Client, path: str, token: str, version: bytes = b"13") -> None:
        self.client = client
        headers = [(b":protocol", b"websocket"), (b"sec-websocket-version", version), *bearer_bytes(token)]
        self.stream_id = client.request("CONNECT", path, headers, end=False)
        self.ws = Connection(ConnectionType.CLIENT)

    def next_event(self) -> Any:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            for event in self.ws.events():
                return event
            assert time.monotonic() < deadline
            self.ws.receive_data(self.client.data(self.stream_id))

    def send(self, event: Any) -> None:
        self.client.conn.send_data(self.stream_id, self.ws.send(event))
        self.client.flush()

    def end(self) -> None:
        self.client.conn.end_stream(self.stream_id)
        self.client.flush()


def bearer_bytes(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token}".encode())]


def first_text(session: WsOverH2) -> dict[str, Any]:
    while True:
        event = session.next_event()
        if isinstance(event, TextMessage):
            return dict(json.loads(event.data))


@pytest.fixture
def plain_server(start_server: Callable[..., Server]) -> Server:
    return start_server()


def h2c(server: Server) -> Iterator[H2Client]:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE_S)
    try:
        yield H2Client(sock, f"127.0.0.1:{server.port}", "http")
    finally:
        sock.close()


def test_websocket_over_http2_ends_every_stream(plain_server: Server) -> None:
    """110 sessions (closed by the client, the server answering) on ONE h2c connection, then a
    plain request on it: before the fix the 101st found the connection's 100 streams taken."""
    alice = sign("alice")
    discussion = make_discussion(plain_server.url, alice)
    for client in h2c(plain_server):
        client.wait_for(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
        assert client.conn.remote_settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL] == 1
        for _ in range(110):
            session = WsOverH2(client, f"/ws?discussion={discussion}", alice)
            assert client.response_status(session.stream_id)[b":status"] == b"200"
            assert first_text(session)["type"] == "hello"
            session.send(CloseConnection(code=1000))
            while not isinstance(event := session.next_event(), CloseConnection):
                assert isinstance(event, Message)
            assert event.code == 1000
            assert isinstance(client.ended(session.stream_id), h2.events.StreamEnded)
            session.end()  # our half too (RFC 8441 §5: each side ends its stream)
        # A refused handshake over h2: 426 with the version we speak, no connection-specific header.
        refused = WsOverH2(client, f"/ws?discussion={discussion}", alice, version=b"8")
        headers = client.response_status(refused.stream_id)
        assert headers[b":status"] == b"426" and headers[b"sec-websocket-version"] == b"13"
        assert b"connection" not in headers
        # The connection still serves requests.
        stream_id = client.request("GET", "/healthz", [])
        assert client.response_status(stream_id)[b":status"] == b"200"


def ws_handshake(server: Server, token: str, discussion: str, version: str = "13") -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE_S)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws?discussion={discussion} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: {version}\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed during the handshake: {data!r}"
        data += chunk
    return sock, data


def masked_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


def close_before_eof(sock: socket.socket, rest: bytes) -> int:
    """Read to EOF; the close code of the Close frame that came before it."""
    ws = Connection(ConnectionType.CLIENT, trailing_data=rest)
    code = None
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        for event in ws.events():
            if isinstance(event, CloseConnection):
                code = event.code
        chunk = sock.recv(65536)
        if not chunk:
            break
        if code is None:
            ws.receive_data(chunk)
    assert code is not None, "TCP closed without a Close frame"
    return code


@pytest.mark.parametrize(
    ("frame", "code"),
    [(masked_frame(0x3, b""), 1002), (masked_frame(0x1, b"\xff\xfe"), 1007)],
    ids=["reserved-opcode", "invalid-utf8"],
)
def test_protocol_errors_get_a_close_frame(plain_server: Server, frame: bytes, code: int) -> None:
    alice = sign("alice")
    discussion = make_discussion(plain_server.url, alice)
    sock, data = ws_handshake(plain_server, alice, discussion)
    with sock:
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        sock.sendall(frame)
        assert close_before_eof(sock, rest) == code


def test_unsupported_websocket_version_gets_426_with_the_version(plain_server: Server) -> None:
    alice = sign("alice")
    sock, data = ws_handshake(plain_server, alice, make_discussion(plain_server.url, alice), version="8")
    with sock:
        head = data.partition(b"\r\n\r\n")[0].decode().lower().split("\r\n")
    assert head[0].startswith("http/1.1 426")
    assert "sec-websocket-version: 13" in head


def test_sigterm_closes_websockets_with_1001_and_ends_streams(
    start_server: Callable[..., Server], stream_path: dict[str, str]
) -> None:
    server = start_server(**stream_path)
    alice = sign("alice")
    discussion = make_discussion(server.url, alice)
    sock, data = ws_handshake(server, alice, discussion)
    sse = socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE_S)
    with sock, sse:
        sse.sendall(
            f"GET /stream?discussion={discussion} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\n\r\n".encode()
        )
        opened = sse.recv(65536)
        assert opened.startswith(b"HTTP/1.1 200")
        assert server.process is not None
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = close_before_eof(sock, data.partition(b"\r\n\r\n")[2])
        closed_after_s = time.monotonic() - started
        assert code == 1001, code
        # The SSE response ends with its last chunk (a clean end, not a cut).
        body = opened
        while chunk := sse.recv(65536):
            body += chunk
        assert body.endswith(b"0\r\n\r\n")
    print(f"WebSocket closed with 1001 {closed_after_s:.2f}s after SIGTERM")
    assert server.process.wait(DEADLINE_S) == 0


def test_tls_http2_shutdown_ends_streams_then_goaway(tls_server: Server, ca: trustme.CA) -> None:  # noqa: F811
    alice = sign("alice")
    base = f"https://127.0.0.1:{tls_server.port}"
    discussion = make_discussion(base, alice, verify=client_context(ca))
    context = client_context(ca)
    context.set_alpn_protocols(["h2"])
    raw = socket.create_connection(("127.0.0.1", tls_server.port), timeout=DEADLINE_S)
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        assert sock.selected_alpn_protocol() == "h2"
        client = H2Client(sock, f"127.0.0.1:{tls_server.port}", "https")
        sse = client.request("GET", f"/stream?discussion={discussion}", bearer_bytes(alice))
        assert client.response_status(sse)[b":status"] == b"200"
        client.data(sse)  # the preamble
        ws = WsOverH2(client, f"/ws?discussion={discussion}", alice)
        assert client.response_status(ws.stream_id)[b":status"] == b"200"
        assert first_text(ws)["type"] == "hello"
        assert tls_server.process is not None
        tls_server.process.send_signal(signal.SIGTERM)

        # WebSocket: Close 1001, then its stream ends cleanly.
        while not isinstance(event := ws.next_event(), CloseConnection):
            pass
        assert event.code == 1001
        ws.send(event.response())
        assert isinstance(client.ended(ws.stream_id), h2.events.StreamEnded)
        ws.end()
        # SSE: the stream ends cleanly (END_STREAM, not RST_STREAM).
        assert isinstance(client.ended(sse), h2.events.StreamEnded)
        # Then GOAWAY, no error, before the connection closes.
        goaway = client.wait_for(lambda e: isinstance(e, h2.events.ConnectionTerminated))
        assert isinstance(goaway, h2.events.ConnectionTerminated)
        assert goaway.error_code == 0
    assert tls_server.process.wait(DEADLINE_S) == 0


def test_idle_http2_connection_gets_goaway_on_shutdown(plain_server: Server) -> None:
    """An HTTP/2 connection with nothing open is closed at SIGTERM with a GOAWAY first (fix 4):
    the client knows its requests were all answered, not cut."""
    for client in h2c(plain_server):
        stream_id = client.request("GET", "/healthz", [])
        assert client.response_status(stream_id)[b":status"] == b"200"
        assert isinstance(client.ended(stream_id), h2.events.StreamEnded)
        assert plain_server.process is not None
        plain_server.process.send_signal(signal.SIGTERM)
        goaway = client.wait_for(lambda e: isinstance(e, h2.events.ConnectionTerminated))
        assert isinstance(goaway, h2.events.ConnectionTerminated)
        assert goaway.error_code == 0 and goaway.last_stream_id == stream_id
    assert plain_server.process.wait(DEADLINE_S) == 0
