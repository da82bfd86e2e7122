"""The ceiling: a minimal SSE server on a raw asyncio Protocol (uvloop when installed).

Same wire format and the same endpoints the workloads use, so the load generator and publisher
run against it unchanged: `GET /stream?discussion=…` (bearer JWT, HS256, checked with hmac;
`retry:` preamble, `id/event/data` frames, `:` heartbeats, resume from `Last-Event-ID` or
`last_event_id`), `POST /api/discussions`, `POST /api/discussions/{id}/responses`, `/readyz`.

What it leaves out is exactly what a real server must add on top of the transport (a
database, users, access control, a shared log, metrics, HTTP/2), so every workload's figure is
also quoted as a ratio to this one, measured in the same run on the same machine. What it
keeps is what any design must do: each event encoded once (SSE frame and HTTP chunk) and the
same bytes written to every subscriber, a bounded send buffer per connection (a slow reader is
cut off), one timer for every heartbeat, no task or timer per connection.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import sys
import time
from collections import deque
from pathlib import Path
from typing import cast
from urllib.parse import parse_qs, unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import BENCH_JWT_SECRET  # noqa: E402

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
MAX_SEND_BUFFER_BYTES = 1 << 20
KEEP_PER_DISCUSSION = 10_000
RETRY_MS = 2_000
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache, no-transform\r\nx-accel-buffering: no\r\ntransfer-encoding: chunked\r\n\r\n"
)


def chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


PREAMBLE = chunk(f"retry: {RETRY_MS}\n: connected\n\n".encode())
HEARTBEAT = chunk(b": heartbeat\n\n")


def response(status: str, body: dict[str, object]) -> bytes:
    data = json.dumps(body, separators=(",", ":")).encode()
    return f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n".encode() + data


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify(token: str, secret: bytes) -> str | None:
    """The `sub` of a valid, unexpired HS256 token, else None."""
    try:
        header, payload, signature = token.split(".")
        expected = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(signature)):
            return None
        claims = json.loads(_unb64(payload))
        if claims.get("exp", 0) <= time.time():
            return None
        return str(claims["sub"])
    except (ValueError, KeyError, TypeError):
        return None


class Broker:
    """Every discussion's subscribers and its recent events (for resume), in this process."""

    def __init__(self, secret: str) -> None:
        self.secret = secret.encode()
        self.epoch = secrets.token_hex(4)
        self.last = (0, 0)
        self.subscribers: dict[str, set[Connection]] = {}
        self.history: dict[str, deque[tuple[tuple[int, int], bytes]]] = {}

    def next_position(self) -> tuple[int, int]:
        ms = max(time.time_ns() // 1_000_000, self.last[0])
        self.last = (ms, self.last[1] + 1) if ms == self.last[0] else (ms, 0)
        return self.last

    def publish(self, discussion: str, body: str, user: str) -> dict[str, object]:
        position = self.next_position()
        cursor = f"{self.epoch}.{position[0]}-{position[1]}"
        envelope = {
            "id": cursor,
            "type": "response_posted",
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "discussion_id": discussion,
            "user": {"id": user, "name": user},
            "payload": {"response": {"id": str(position[1]), "discussion_id": discussion, "body": body}},
        }
        data = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()
        # Encoded once: the same chunk goes to every subscriber.
        frame = chunk(b"id: " + cursor.encode() + b"\nevent: response_posted\ndata: " + data + b"\n\n")
        history = self.history.setdefault(discussion, deque(maxlen=KEEP_PER_DISCUSSION))
        history.append((position, frame))
        for connection in tuple(self.subscribers.get(discussion, ())):
            connection.send(frame)
        return envelope

    def missed(self, discussions: list[str], cursor: str) -> list[bytes]:
        epoch, _, position = cursor.partition(".")
        ms, _, seq = position.partition("-")
        if epoch != self.epoch or not ms.isdigit() or not seq.isdigit():
            return []
        after = (int(ms), int(seq))
        events = [item for d in discussions for item in self.history.get(d, ()) if item[0] > after]
        return [frame for _, frame in sorted(events)]

    def heartbeat(self) -> None:
        for subscribers in self.subscribers.values():
            for connection in tuple(subscribers):
                connection.send(HEARTBEAT)


class Connection(asyncio.Protocol):
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.discussions: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same methods.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        for discussion in self.discussions:
            subscribers = self.broker.subscribers.get(discussion)
            if subscribers is not None:
                subscribers.discard(self)
                if not subscribers:
                    del self.broker.subscribers[discussion]
        self.discussions = []
        self.transport = None

    def send(self, data: bytes) -> None:
        transport = self.transport
        if transport is None:
            return
        if transport.get_write_buffer_size() > MAX_SEND_BUFFER_BYTES:
            transport.abort()  # a slow reader: cut it off; it resumes from its cursor
            return
        transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self.discussions:
            return  # a stream connection: nothing more is read from it
        self.buffer += data
        while self.transport is not None and not self.discussions:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD_BYTES:
                    self.reply("431 Request Header Fields Too Large", {"error": {"code": "bad_request"}}, close=True)
                return
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or 0)
            if length > MAX_BODY_BYTES:
                self.reply("413 Payload Too Large", {"error": {"code": "payload_too_large"}}, close=True)
                return
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            method, target, _version = [*head[0].split(" "), "", "", ""][:3]
            self.handle(method, target, headers, body)

    def reply(self, status: str, body: dict[str, object], *, close: bool = False) -> None:
        assert self.transport is not None
        self.transport.write(response(status, body))
        if close:
            self.transport.close()

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        url = urlsplit(target)
        path = url.path
        if path == "/readyz":
            self.reply("200 OK", {"status": "ready"})
            return
        authorization = headers.get("authorization", "")
        user = verify(authorization[7:], self.broker.secret) if authorization.startswith("Bearer ") else None
        if user is None:
            self.reply("401 Unauthorized", {"error": {"code": "unauthenticated"}})
            return
        if method == "GET" and path == "/stream":
            query = parse_qs(url.query)
            self.open_stream(
                query.get("discussion", []), headers.get("last-event-id") or query.get("last_event_id", [""])[0]
            )
        elif method == "POST" and path == "/api/discussions":
            self.reply("201 Created", {"id": secrets.token_urlsafe(12)})
        elif method == "POST" and path.startswith("/api/discussions/") and path.endswith("/responses"):
            discussion = unquote(path[len("/api/discussions/") : -len("/responses")])
            try:
                text = json.loads(body)["body"]
            except (ValueError, KeyError, TypeError):
                self.reply("400 Bad Request", {"error": {"code": "malformed_json"}})
                return
            self.reply("201 Created", self.broker.publish(discussion, str(text), user))
        else:
            self.reply("404 Not Found", {"error": {"code": "not_found"}})

    def open_stream(self, discussions: list[str], resume: str) -> None:
        assert self.transport is not None
        self.discussions = list(dict.fromkeys(discussions))
        missed = self.broker.missed(self.discussions, resume) if resume else []
        self.transport.write(STREAM_HEAD + PREAMBLE + b"".join(missed))
        for discussion in self.discussions:
            self.broker.subscribers.setdefault(discussion, set()).add(self)


async def serve(port: int, heartbeat_s: float) -> None:
    broker = Broker(os.environ.get("PARLEY_JWT_SECRET", BENCH_JWT_SECRET))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(broker), "127.0.0.1", port, backlog=4096)
    async with server:
        while True:  # one timer for every connection's heartbeat
            await asyncio.sleep(heartbeat_s)
            broker.heartbeat()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8001")))
    parser.add_argument("--heartbeat-s", type=float, default=float(os.environ.get("PARLEY_HEARTBEAT_S", "30")))
    args = parser.parse_args()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(serve(args.port, args.heartbeat_s))


if __name__ == "__main__":
    main()
