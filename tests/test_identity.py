"""Identity: the algorithm allow-list, required claims, cookies and the development login."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey
from quart import Quart
from quart.typing import TestClientProtocol as Client

from app.main import create_app
from app.settings import Settings

from .support import TEST_JWT_SECRET, bearer, sign


@pytest.fixture
async def make_app(tmp_path: Path) -> AsyncIterator[Any]:
    apps: list[Any] = []

    async def make(**settings: Any) -> Client:
        options: dict[str, Any] = {
            "database_url": f"sqlite+aiosqlite:///{tmp_path / f'p{len(apps)}.db'}",
            "data_dir": tmp_path / f".parley{len(apps)}",
            "check_responses": True,  # every answer is also checked against its declared contract
            **settings,
        }
        context = create_app(Settings(**options)).test_app()
        test_app = await context.__aenter__()
        apps.append(context)
        app: Quart = test_app.app  # type: ignore[attr-defined]
        return app.test_client()

    yield make
    for context in apps:
        await context.__aexit__(None, None, None)


async def status(client: Client, token: str) -> tuple[int, str]:
    r = await client.get("/api/me/follows", headers=bearer(token))
    body = await r.get_json()
    return r.status_code, body["error"]["code"] if r.status_code != 200 else ""


async def test_tokens_are_checked(make_app: Any) -> None:
    client = await make_app(jwt_secret=TEST_JWT_SECRET, jwt_issuer="https://id.example", jwt_audience="parley")
    good = sign("alice", iss="https://id.example", aud="parley")
    assert await status(client, good) == (200, "")
    now = int(time.time())
    key = OctKey.import_key(TEST_JWT_SECRET)
    cases = {
        "expired": sign("alice", ttl_s=-60, iss="https://id.example", aud="parley"),
        "no exp": jwt.encode({"alg": "HS256"}, {"sub": "a", "iss": "https://id.example", "aud": "parley"}, key),
        "wrong issuer": sign("alice", iss="https://evil.example", aud="parley"),
        "wrong audience": sign("alice", iss="https://id.example", aud="other"),
        "wrong secret": jwt.encode(
            {"alg": "HS256"}, {"sub": "a", "exp": now + 60}, OctKey.import_key("another-secret-" + "y" * 40)
        ),
        "alg none": "eyJhbGciOiJub25lIn0." + "eyJzdWIiOiJhIiwiZXhwIjo0MTAyNDQ0ODAwfQ.",
        "HS512 not allowed": jwt.encode(
            {"alg": "HS512"},
            {"sub": "a", "exp": now + 60, "iss": "https://id.example", "aud": "parley"},
            key,
            algorithms=["HS512"],
        ),
        "garbage": "garbage",
    }
    for name, token in cases.items():
        code, _ = await status(client, token)
        assert code == 401, name
    assert (await status(client, cases["expired"]))[1] == "token_expired"
    r = await client.get("/api/me/follows")
    assert r.status_code == 401


class _Jwks(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, RSAKey, ECKey]]:
    rsa = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    ec = ECKey.generate_key("P-256", parameters={"kid": "ec-1"})
    _Jwks.body = json.dumps({"keys": [rsa.as_dict(private=False), ec.as_dict(private=False)]}).encode()
    server = HTTPServer(("127.0.0.1", 0), _Jwks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", rsa, ec
    server.shutdown()


async def test_rs256_and_es256_tokens_from_a_jwks(make_app: Any, jwks_server: tuple[str, RSAKey, ECKey]) -> None:
    url, rsa, ec = jwks_server
    client = await make_app(jwks_url=url)
    claims = {"sub": "alice", "name": "Alice", "exp": int(time.time()) + 60}
    for alg, key in (("RS256", rsa), ("ES256", ec)):
        token = jwt.encode({"alg": alg, "kid": key.kid}, claims, key)
        assert await status(client, token) == (200, ""), alg
    # A token that names a key of its own in its header is not trusted for it.
    intruder = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    forged = jwt.encode({"alg": "RS256", "kid": "rsa-1", "jwk": intruder.as_dict(private=False)}, claims, intruder)
    assert (await status(client, forged))[0] == 401
    r = await client.post("/api/dev/login", json={"name": "mallory"})
    assert r.status_code == 404  # no dev login once real identities are configured


async def test_dev_login_and_cookie_session(make_app: Any) -> None:
    client = await make_app(dev_login=True)
    r = await client.post("/api/dev/login", json={"name": "Alice Smith"})
    assert r.status_code == 200
    body = await r.get_json()
    assert body["user"] == {"id": "dev-alice-smith", "name": "Alice Smith"}
    cookie = r.headers.get("Set-Cookie", "")
    assert "parley_token=" in cookie and "HttpOnly" in cookie
    # The test client keeps the cookie: the browser path.
    assert (await client.get("/api/me/follows")).status_code == 200
    assert (await client.delete("/api/session")).status_code == 200
    assert (await client.get("/api/me/follows")).status_code == 401
    r = await client.post("/api/session", headers=bearer(body["token"]))
    assert r.status_code == 200 and "parley_token=" in r.headers.get("Set-Cookie", "")
    assert (await client.get("/api/me/follows")).status_code == 200
    r = await client.post("/api/dev/login", json={"name": ""})
    assert r.status_code == 422
