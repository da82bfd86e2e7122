"""The browser-facing edge (issue 11, item 4), against real server processes: cross-site request
forgery, JSON-only bodies, security headers, cookies behind a TLS-terminating proxy, and the
`WWW-Authenticate` challenge on 401s. The page itself keeps working in Chromium under its CSP."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, expect

from .support import Server, bearer, sign

pytestmark = pytest.mark.slow

EVIL = "https://evil.example"


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    return start_server(PARLEY_ALLOWED_ORIGINS="https://app.parley.example")


def discussion_count(server: Server) -> int:
    with contextlib.closing(sqlite3.connect(server.workdir / "parley.db")) as db:
        return int(db.execute("SELECT count(*) FROM discussions").fetchone()[0])


@contextlib.asynccontextmanager
async def cookie_client(server: Server, name: str = "alice") -> AsyncIterator[httpx.AsyncClient]:
    """A client holding only the `parley_token` cookie, as a browser would."""
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        r = await client.post("/api/dev/login", json={"name": name})
        assert r.status_code == 200, r.text
        assert "parley_token" in client.cookies
        yield client


async def test_cookie_requests_from_other_sites_are_refused_and_store_nothing(server: Server) -> None:
    own = f"http://127.0.0.1:{server.port}"
    title = b'{"title": "Forged"}'
    async with cookie_client(server) as client:
        refused: list[dict[str, str]] = [
            # The attack as found: a text/plain "simple" request from another site.
            {"Content-Type": "text/plain", "Origin": EVIL},
            {"Content-Type": "application/json", "Origin": EVIL},
            {"Content-Type": "application/json", "Origin": "null"},  # sandboxed frame, data: URL
            # A sibling subdomain or another port is the same *site*: SameSite=Lax lets the cookie go.
            {"Content-Type": "application/json", "Origin": "http://127.0.0.1:1", "Sec-Fetch-Site": "same-site"},
            {"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"},
            # Fetch Metadata is believed over a matching Origin: it is the browser's own verdict.
            {"Content-Type": "application/json", "Origin": own, "Sec-Fetch-Site": "cross-site"},
        ]
        for headers in refused:
            r = await client.post("/api/discussions", content=title, headers=headers)
            assert r.status_code == 403, (headers, r.text)
            assert r.json()["error"]["code"] == "cross_site_request"
        assert discussion_count(server) == 0
        # Signing in and out are state changes too (login CSRF signs a victim in as the attacker).
        r = await client.post("/api/dev/login", json={"name": "mallory"}, headers={"Origin": EVIL})
        assert r.status_code == 403 and "set-cookie" not in r.headers
        r = await client.delete("/api/session", headers={"Origin": EVIL})
        assert r.status_code == 403 and "set-cookie" not in r.headers

        allowed: list[dict[str, str]] = [
            {"Sec-Fetch-Site": "same-origin", "Origin": own},  # our own page, a modern browser
            {"Origin": own},  # our own page, a browser without Fetch Metadata
            {"Origin": "https://app.parley.example", "Sec-Fetch-Site": "same-site"},  # listed
            {},  # not a browser at all (curl with a cookie): nothing to forge
        ]
        for headers in allowed:
            r = await client.post("/api/discussions", json={"title": "Mine"}, headers=headers)
            assert r.status_code == 201, (headers, r.text)
    # A bearer token cannot be attached by another site: any Origin is fine.
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        r = await client.post(
            "/api/discussions", json={"title": "Service"}, headers={**bearer(sign("svc")), "Origin": EVIL}
        )
        assert r.status_code == 201, r.text
    assert discussion_count(server) == len(allowed) + 1


async def test_bodies_must_be_json(server: Server) -> None:
    token = sign("alice")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
            r = await client.post(
                "/api/discussions", content=b'{"title": "x"}', headers={**bearer(token), "Content-Type": content_type}
            )
            assert r.status_code == 415, (content_type, r.text)
            assert r.json()["error"]["code"] == "unsupported_media_type"
        r = await client.post("/api/discussions", content=b'{"title": "x"}', headers=bearer(token))  # no type
        assert r.status_code == 415
        assert discussion_count(server) == 0
        r = await client.post(
            "/api/discussions",
            content=b'{"title": "x"}',
            headers={**bearer(token), "Content-Type": "application/json; charset=utf-8"},
        )
        assert r.status_code == 201
        # A bodiless state change needs no type (mark all read).
        r = await client.post("/api/notifications/read-all", headers=bearer(token))
        assert r.status_code == 200


async def test_page_and_assets_carry_security_headers(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        for path in ("/", "/d/abc", "/static/app.js", "/static/style.css", "/sw.js", "/api/discussions/x"):
            r = await client.get(path)
            assert r.headers["x-content-type-options"] == "nosniff", path
            assert r.headers["x-frame-options"] == "DENY", path
            policy = r.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy, path
            assert "unsafe-inline" not in policy and "unsafe-eval" not in policy


def own_dir(tmp_path: Path, name: str) -> Path:
    """Each server its own directory: the embedded event log admits one process per directory."""
    (tmp_path / name).mkdir()
    return tmp_path / name


async def test_401_carries_a_bearer_challenge(start_server: Callable[..., Server], tmp_path: Path) -> None:
    expired = sign("alice", ttl_s=-60)
    for lean in ("1", "0"):
        server = start_server(own_dir(tmp_path, lean), PARLEY_LEAN_STREAM=lean)
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            for path in ("/api/notifications", "/stream", "/poll?timeout=0"):
                r = await client.get(path)
                assert r.status_code == 401, (lean, path)
                assert r.headers["www-authenticate"] == 'Bearer realm="parley"', (lean, path)
                r = await client.get(path, headers=bearer(expired))
                assert r.status_code == 401, (lean, path)
                assert r.headers["www-authenticate"] == 'Bearer realm="parley", error="invalid_token"', (lean, path)


def cookie_attributes(response: httpx.Response) -> list[str]:
    [cookie] = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
    return [part.strip().lower() for part in cookie.split(";")]


async def test_cookies_are_secure_behind_a_trusted_tls_proxy(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    behind_proxy = start_server(own_dir(tmp_path, "proxied"), PARLEY_TRUSTED_PROXIES="127.0.0.1")
    direct = start_server(own_dir(tmp_path, "direct"))
    login: dict[str, Any] = {"json": {"name": "alice"}, "headers": {"X-Forwarded-Proto": "https"}}
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(behind_proxy.url + "/api/dev/login", **login)
        assert "secure" in cookie_attributes(r)
        r = await client.post(behind_proxy.url + "/api/dev/login", json={"name": "alice"})
        assert "secure" not in cookie_attributes(r)  # plain http to the proxy's peer: not Secure
        # A peer that is not a trusted proxy cannot claim https (nor anything else).
        r = await client.post(direct.url + "/api/dev/login", **login)
        assert "secure" not in cookie_attributes(r)
        # The proxy's Host is believed too, so an https page behind it passes the Origin check.
        r = await client.post(
            behind_proxy.url + "/api/dev/login",
            json={"name": "alice"},
            headers={
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "parley.example",
                "Origin": "https://parley.example",
            },
        )
        assert r.status_code == 200, r.text


@pytest.mark.browser
async def test_the_page_works_under_its_content_security_policy(
    browser: Browser, start_server: Callable[..., Server]
) -> None:
    server = start_server()  # same-origin WebSockets (a PARLEY_ALLOWED_ORIGINS list replaces that)
    context = await browser.new_context(base_url=server.url)
    page = await context.new_page()
    violations: list[str] = []
    page.on(
        "console",
        lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None,
    )
    await page.goto("/")
    await page.fill("#login-form input", "Alice")
    await page.click("#login-form button")
    await expect(page.locator("#me-name")).to_have_text("Alice")
    await page.fill("#new-discussion input[name=title]", "Trees")
    await page.click("#new-discussion button")
    await expect(page.locator("#title")).to_have_text("Trees", timeout=10_000)
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=10_000)
    await page.fill("#composer textarea", "Shade matters")
    await page.click("#composer button")
    await expect(page.locator("#thread")).to_contain_text("Shade matters", timeout=10_000)
    # The WebSocket and long-poll transports are allowed by connect-src 'self' too.
    for transport in ("ws", "poll"):
        await page.goto(page.url.split("?")[0] + f"?transport={transport}")
        await expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=10_000)
    # The self-contained /docs page keeps its one inline <style> (allowed by its hash).
    await page.goto("/docs")
    assert await page.evaluate("getComputedStyle(document.body).maxWidth") != "none"
    assert violations == []
    await context.close()
