"""A Web Push service of the tests' own, on loopback: the real peer of Parley's push sender.

No outside network is reachable, so this plays the push service's part as RFC 8030/8291/8292
define it: it checks the VAPID JWT (ES256, signed by the key in `k=`, `aud` = its own origin,
`exp` within 24 h, a `sub`) and decrypts the aes128gcm body with the subscription's private
key and auth secret (`http_ece`), exactly as a browser would. Each endpoint path can be told
to answer 201, 410 or to hang (never answer) to test the sender's failure handling.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import http_ece
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from joserfc import jwt
from joserfc.jwk import ECKey


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Browser:
    """What a browser keeps for one push subscription: its key pair and auth secret."""

    endpoint: str
    private_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    @property
    def subscription(self) -> dict[str, Any]:
        point = self.private_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        return {"endpoint": self.endpoint, "keys": {"p256dh": b64url(point), "auth": b64url(self.auth)}}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    claims: dict[str, Any]
    payload: dict[str, Any]


class PushService:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.errors: list[str] = []
        self.attempts: dict[str, int] = {}
        self.behaviour: dict[str, str] = {}  # path -> "ok" | "gone" | "hang"
        self.browsers: dict[str, Browser] = {}
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> PushService:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._release.set()  # let hanging requests end
        self._server.shutdown()
        self._server.server_close()

    def browser(self, name: str, behaviour: str = "ok") -> Browser:
        path = f"/push/{name}"
        browser = Browser(self.origin + path)
        self.browsers[path] = browser
        self.behaviour[path] = behaviour
        return browser

    def received_by(self, name: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == f"/push/{name}"]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                return None

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with service._lock:
                    service.attempts[self.path] = service.attempts.get(self.path, 0) + 1
                behaviour = service.behaviour.get(self.path, "gone")
                if behaviour == "hang":
                    service._release.wait(60)
                    return
                if behaviour == "gone":
                    self._answer(410)
                    return
                try:
                    received = service._check(self.path, dict(self.headers), body)
                except Exception as error:  # a protocol violation: refuse it and remember why
                    with service._lock:
                        service.errors.append(f"{type(error).__name__}: {error}")
                    self._answer(400)
                    return
                with service._lock:
                    service.received.append(received)
                self._answer(201)

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler

    def _check(self, path: str, headers: dict[str, str], body: bytes) -> Received:
        lower = {k.lower(): v for k, v in headers.items()}
        scheme, _, params = lower["authorization"].partition(" ")
        if scheme.lower() != "vapid":
            raise ValueError(f"not a VAPID authorization: {scheme}")
        fields = dict(part.strip().split("=", 1) for part in params.split(","))
        point = unb64url(fields["k"])
        key = ECKey.import_key(
            {"kty": "EC", "crv": "P-256", "x": b64url(point[1:33]), "y": b64url(point[33:65])}  # type: ignore[arg-type]
        )
        token = jwt.decode(fields["t"], key, algorithms=["ES256"])
        claims = dict(token.claims)
        now = time.time()
        if claims.get("aud") != self.origin:
            raise ValueError(f"aud {claims.get('aud')!r} is not {self.origin!r}")
        if not now < int(claims["exp"]) <= now + 24 * 3600:
            raise ValueError("exp outside (now, now + 24 h]")
        if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
            raise ValueError("sub must be a mailto: or https: URL")
        if lower.get("content-encoding") != "aes128gcm":
            raise ValueError("content-encoding must be aes128gcm")
        if int(lower.get("ttl", "0")) <= 0:
            raise ValueError("TTL must be set and positive")
        browser = self.browsers[path]
        plain = http_ece.decrypt(body, private_key=browser.private_key, auth_secret=browser.auth, version="aes128gcm")
        return Received(path, lower, claims, json.loads(plain))
