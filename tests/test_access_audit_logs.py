"""The access log (one structured line per request) and the audit log (who edited or deleted
which response, who set membership), against a real server process."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from .support import Server, bearer, sign
from .test_stream import make_discussion, post

pytestmark = pytest.mark.slow


def log_lines(server: Server, logger: str) -> list[dict[str, Any]]:
    lines = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("logger") == logger:
                lines.append(entry)
    return lines


async def wait_lines(server: Server, logger: str, count: int, timeout_s: float = 10) -> list[dict[str, Any]]:
    async with asyncio.timeout(timeout_s):
        while len(lines := log_lines(server, logger)) < count:
            await asyncio.sleep(0.05)
    return lines


async def test_every_request_gets_one_access_line_with_the_route_template_and_no_secrets(
    start_server: Callable[..., Server],
) -> None:
    server = start_server(PARLEY_ACCESS_LOG="1")
    token = sign("alice")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        discussion = await make_discussion(client, server, token)
        await post(client, server, token, discussion, "hello")
        # A token in the query string (as some clients send it) must not reach the log.
        r = await client.get(f"/api/discussions/{discussion}/responses?limit=5&access_token={token}")
        assert r.status_code == 401  # not a way to sign in, either
        assert (await client.get("/api/discussions/nope", headers=bearer(token))).status_code == 404
        assert (await client.get("/api/me/follows")).status_code == 401
        assert (await client.get("/healthz")).status_code == 200  # probes: only failures are logged
    lines = await wait_lines(server, "parley.access", 5)
    routes = [(e["method"], e["route"], e["status"], e["user_id"]) for e in lines if e["route"].startswith("/api/")]
    assert ("POST", "/api/discussions", 201, "alice") in routes
    assert ("POST", "/api/discussions/<discussion_id>/responses", 201, "alice") in routes
    assert ("GET", "/api/discussions/<discussion_id>/responses", 401, None) in routes
    assert ("GET", "/api/discussions/<discussion_id>", 404, "alice") in routes
    assert ("GET", "/api/me/follows", 401, None) in routes
    assert all(isinstance(e["duration_ms"], float) and e["duration_ms"] >= 0 for e in lines)
    assert "/healthz" not in [e["route"] for e in lines]
    text = server.log()
    assert token not in text and "access_token" not in text and discussion not in text


async def test_development_is_quiet_by_default(start_server: Callable[..., Server]) -> None:
    server = start_server()  # the tests' servers run with development login on
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        await make_discussion(client, server, sign("alice"))
        assert (await client.get("/healthz")).status_code == 200
    assert log_lines(server, "parley.access") == []


def audit_rows(database: Path) -> list[tuple[str, str, str, dict[str, Any]]]:
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT actor_id, action, target, details FROM audit_log ORDER BY id").fetchall()
    return [(actor, action, target, json.loads(details or "{}")) for actor, action, target, details in rows]


async def test_edits_deletions_and_membership_are_audited(start_server: Callable[..., Server], tmp_path: Path) -> None:
    server = start_server()
    owner, author = sign("owner"), sign("author")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        r = await client.post(
            "/api/discussions",
            json={"title": "T", "visibility": "private", "members": ["author"]},
            headers=bearer(owner),
        )
        discussion = r.json()["id"]
        mine = await post(client, server, author, discussion, "first words")
        r = await client.patch(f"/api/responses/{mine['id']}", json={"body": "second words"}, headers=bearer(author))
        assert r.status_code == 200
        # The discussion's creator removes the author's response: a moderation act.
        r = await client.delete(f"/api/responses/{mine['id']}", headers=bearer(owner))
        assert r.status_code == 200
        # Refused actions change nothing, so record nothing.
        other = await post(client, server, owner, discussion, "owner's")
        r = await client.patch(f"/api/responses/{other['id']}", json={"body": "x"}, headers=bearer(author))
        assert r.status_code == 403
    target = f"response:{mine['id']}"
    assert audit_rows(tmp_path / "parley.db") == [
        ("owner", "membership.set", f"discussion:{discussion}", {"members": ["author"]}),
        ("author", "response.edit", target, {"discussion": discussion}),
        ("owner", "response.delete", target, {"discussion": discussion, "author": "author"}),
    ]
    lines = await wait_lines(server, "parley.audit", 3)
    assert [(e["actor_id"], e["action"], e["target"]) for e in lines][1:] == [
        ("author", "response.edit", target),
        ("owner", "response.delete", target),
    ]
    # The words themselves are in neither.
    assert "first words" not in server.log() and "second words" not in server.log()
