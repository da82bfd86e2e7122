"""The API's description (`GET /openapi.json`, `GET /docs`, issue 12): every route is described,
the document is valid OpenAPI 3.1, every event type has a payload schema, and the answers the
app really gives keep to the document (in-process, real SQLite, `PARLEY_CHECK_RESPONSES` on)."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from html import escape
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from quart import Quart
from quart.typing import TestClientProtocol as Client

from app.api.openapi import build, openapi_path, undocumented
from app.log.events import EVENT_TYPES
from app.main import create_app
from app.settings import Settings
from app.web.contract import media_matches
from app.web.event_schemas import EVENT_PAYLOADS

from .push_service import Browser
from .support import TEST_JWT_SECRET, bearer, sign

DEADLINE_S = 15.0
NOT_REST = {"/stream", "/ws"}  # checked on their own below: a stream and an upgrade


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Quart]:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}",
        jwt_secret=TEST_JWT_SECRET,
        dev_login=True,
        data_dir=tmp_path / ".parley",
        check_responses=True,
        # The push endpoints below are made up and resolve nowhere (the SSRF check would refuse them).
        push_allow_insecure=True,
    )
    quart_app = create_app(settings)
    async with quart_app.test_app() as test_app:
        yield test_app.app  # type: ignore[attr-defined]


@pytest.fixture
def client(app: Quart) -> Client:
    return app.test_client()


def test_every_route_is_described_and_the_document_is_valid(app: Quart) -> None:
    assert undocumented(app) == []
    document = build(app)
    validate(document)  # raises on anything OpenAPI 3.1 does not allow
    described = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    routed = {
        (method, openapi_path(rule.rule))
        for rule in app.url_map.iter_rules()
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    assert described == routed
    assert {"/stream", "/ws", "/poll"} <= set(document["paths"])
    for path, item in document["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            assert operation["summary"], where
            assert any(status.startswith("2") or status == "101" for status in operation["responses"]), where
            codes = operation["responses"]["500"]["content"]["application/json"]["schema"]["allOf"][1]
            assert codes["properties"]["error"]["properties"]["code"]["enum"] == ["internal_error"], where
            if operation["security"]:  # signed-in routes answer 401 with the token codes
                assert "401" in operation["responses"], where


def test_every_event_type_has_a_payload_schema(app: Quart) -> None:
    assert set(EVENT_PAYLOADS) == EVENT_TYPES
    document = build(app)
    schemas = document["components"]["schemas"]
    assert set(document["x-event-types"]) == EVENT_TYPES
    for event_type, ref in document["x-event-types"].items():
        envelope = schemas[ref.rsplit("/", 1)[-1]]
        assert envelope["properties"]["type"]["const"] == event_type
        assert set(envelope["required"]) == {"id", "type", "ts", "discussion_id", "user", "payload"}
    union = {option["$ref"] for option in schemas["Event"]["oneOf"]}
    assert union == set(document["x-event-types"].values())


async def test_the_document_and_its_page_are_served(app: Quart, client: Client) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    served = await r.get_json()
    assert served == json.loads(json.dumps(build(app)))
    r = await client.get("/docs")
    assert r.status_code == 200 and r.content_type.startswith("text/html")
    page = (await r.get_data()).decode()
    # Self-contained: no script, nothing fetched from elsewhere (no internet, no CDN).
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    for path, item in served["paths"].items():
        assert f"<span class=path>{escape(path)}</span>" in page
        for operation in item.values():
            assert escape(operation["summary"]) in page
    for event_type in EVENT_TYPES:
        assert f"<code>{event_type}</code>" in page
    for name in served["components"]["schemas"]:
        assert f'id="schema-{name}"' in page


class Conformance:
    """Checks real answers against the document itself (not only the pydantic models), and
    records which operations answered what."""

    def __init__(self, document: dict[str, Any], client: Client) -> None:
        self.document = document
        self.client = client
        self.seen: set[tuple[str, str, int]] = set()

    def schema_for(self, method: str, template: str, status: int, media: str) -> dict[str, Any] | None:
        operation = self.document["paths"][template][method.lower()]
        answer = operation["responses"].get(str(status))
        assert answer is not None, f"{method} {template}: status {status} is not in the document"
        content = answer.get("content", {})
        if not content:
            return None
        declared = next((key for key in content if media_matches(key, media)), None)
        assert declared is not None, f"{method} {template} {status}: {media} not in {list(content)}"
        schema: dict[str, Any] | None = content[declared].get("schema")
        return schema

    def check(self, schema: dict[str, Any], value: Any, where: str) -> None:
        validator = Draft202012Validator({**schema, "components": self.document["components"]})
        errors = sorted(validator.iter_errors(value), key=lambda error: list(error.path))
        assert not errors, f"{where}: {errors[0].message} at {list(errors[0].path)}"

    async def call(self, method: str, template: str, expect: int, *, path: str | None = None, **kwargs: Any) -> Any:
        r = await self.client.open(path or template, method=method, **kwargs)
        body = await r.get_data()
        assert r.status_code == expect, f"{method} {path or template}: {r.status_code} {body[:300]!r}"
        media = (r.content_type or "").split(";")[0]
        schema = self.schema_for(method, template, r.status_code, media)
        self.seen.add((method, template, r.status_code))
        if media == "application/json":
            value = json.loads(body)
            if schema is not None:
                self.check(schema, value, f"{method} {template} {r.status_code}")
            return value
        return body


async def eventually(probe: Callable[[], Awaitable[Any]], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = await probe()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {DEADLINE_S}s: {what}")


async def _computed(answer: Awaitable[Any]) -> Any:
    document = await answer
    return document if document["version"] > 0 and document["participants"] > 0 else None


async def test_answers_keep_to_the_document(app: Quart, client: Client) -> None:
    api = Conformance(build(app), client)
    suffix = uuid.uuid4().hex[:6]
    alice, bob = sign(f"alice-{suffix}", "Alice"), sign(f"bob-{suffix}", "Bob")
    a, b = bearer(alice), bearer(bob)

    # Operations, pages, the description itself.
    await api.call("GET", "/healthz", 200)
    await api.call("GET", "/readyz", 200)
    await api.call("GET", "/metrics", 200)
    await api.call("GET", "/openapi.json", 200)
    await api.call("GET", "/docs", 200)
    await api.call("GET", "/", 200)
    await api.call("GET", "/d/{discussion_id}", 200, path="/d/anything")
    await api.call("GET", "/sw.js", 200)
    await api.call("GET", "/static/{filename}", 200, path="/static/style.css")
    await api.call("GET", "/static/{filename}", 404, path="/static/no-such-file.css")

    # Identity.
    login = await api.call("POST", "/api/dev/login", 200, json={"name": "Carol"})
    await api.call("POST", "/api/dev/login", 422, json={"name": ""})
    await api.call("POST", "/api/dev/login", 400, data=b"{nope", headers={"Content-Type": "application/json"})
    await api.call("POST", "/api/session", 200, headers=bearer(login["token"]))
    await api.call("POST", "/api/session", 401)
    await api.call("POST", "/api/session", 401, headers=bearer("not-a-token"))
    await api.call("DELETE", "/api/session", 200)

    # Discussions and responses.
    discussion = await api.call("POST", "/api/discussions", 201, json={"title": "Trees"}, headers=a)
    await api.call("POST", "/api/discussions", 422, json={"title": "x", "visibility": "secret"}, headers=a)
    await api.call("POST", "/api/discussions", 413, json={"title": "x" * 70_000}, headers=a)
    await api.call("POST", "/api/discussions", 401, json={"title": "Trees"})
    here = f"/api/discussions/{discussion['id']}"
    await api.call("GET", "/api/discussions/{discussion_id}", 200, path=here, headers=b)
    await api.call("GET", "/api/discussions/{discussion_id}", 404, path=here + "x", headers=b)
    await api.call("PUT", "/api/discussions/{discussion_id}/follow", 200, path=here + "/follow", headers=a)
    await api.call("PUT", "/api/discussions/{discussion_id}/follow", 200, path=here + "/follow", headers=b)
    await api.call("DELETE", "/api/discussions/{discussion_id}/follow", 200, path=here + "/follow", headers=b)
    responses = "/api/discussions/{discussion_id}/responses"
    listing = await api.call("GET", responses, 200, path=here + "/responses", headers=a)
    cursor = listing["cursor"]
    first = await api.call("POST", responses, 201, path=here + "/responses", json={"body": "Oaks"}, headers=a)
    retry = {"body": "Elms, @Alice", "parent_id": first["id"], "client_id": "c-1"}
    reply = await api.call("POST", responses, 201, path=here + "/responses", json=retry, headers=b)
    again = await api.call("POST", responses, 200, path=here + "/responses", json=retry, headers=b)
    assert again["id"] == reply["id"]
    await api.call("POST", responses, 422, path=here + "/responses", json={"body": "x", "parent_id": "q"}, headers=a)
    await api.call("GET", responses, 200, path=here + "/responses", query_string={"after": first["id"]}, headers=a)
    await api.call("GET", responses, 422, path=here + "/responses", query_string={"limit": "5000"}, headers=a)
    one = "/api/responses/{response_id}"
    await api.call("PATCH", one, 200, path=f"/api/responses/{first['id']}", json={"body": "Old oaks"}, headers=a)
    await api.call("PATCH", one, 403, path=f"/api/responses/{first['id']}", json={"body": "Mine"}, headers=b)
    await api.call("DELETE", one, 200, path=f"/api/responses/{first['id']}", headers=a)
    await api.call("PATCH", one, 409, path=f"/api/responses/{first['id']}", json={"body": "Back"}, headers=a)
    await api.call("DELETE", one, 404, path="/api/responses/12345678", headers=a)
    await api.call("GET", "/api/me/follows", 200, headers=a)
    await api.call("GET", "/api/discussions", 200, query_string={"scope": "mine", "limit": "5"}, headers=a)
    await api.call("GET", "/api/discussions", 200, query_string={"before": discussion["id"]}, headers=b)
    await api.call("GET", "/api/discussions", 422, query_string={"scope": "everyone"}, headers=a)
    # Members of a private discussion (the creator only).
    private = await api.call(
        "POST", "/api/discussions", 201, json={"title": "Ours", "visibility": "private"}, headers=a
    )
    member = "/api/discussions/{discussion_id}/members/{user_id}"
    bobs = f"/api/discussions/{private['id']}/members/bob-{suffix}"
    await api.call("PUT", member, 200, path=bobs, headers=a)
    await api.call("PUT", member, 403, path=f"/api/discussions/{private['id']}/members/carol", headers=b)
    await api.call("PUT", member, 409, path=f"/api/discussions/{discussion['id']}/members/bob", headers=a)
    await api.call("PUT", member, 422, path=f"/api/discussions/{private['id']}/members/alice-{suffix}", headers=a)
    await api.call("DELETE", member, 200, path=bobs, headers=a)
    await api.call("DELETE", member, 404, path=bobs, headers=b)

    # Common ground (issue 10): propositions, stances, the analysis; broadcasts.
    propositions = "/api/discussions/{discussion_id}/propositions"
    lanes = await api.call("POST", propositions, 201, path=here + "/propositions", json={"text": "Lanes"}, headers=a)
    await api.call("POST", propositions, 422, path=here + "/propositions", json={"text": ""}, headers=a)
    await api.call("GET", propositions, 200, path=here + "/propositions", headers=b)
    stance = {"body": "Yes", "stances": {lanes["id"]: "agree"}}
    await api.call("POST", responses, 201, path=here + "/responses", json=stance, headers=b)
    wrong = {"body": "No", "stances": {"nope": "agree"}}
    await api.call("POST", responses, 422, path=here + "/responses", json=wrong, headers=b)
    analysis = "/api/discussions/{discussion_id}/analysis"
    document = await eventually(
        lambda: _computed(api.call("GET", analysis, 200, path=here + "/analysis", headers=a)), "a computed analysis"
    )
    analyzer = bearer(sign(f"analyzer-{suffix}", roles=["analyzer"]))
    await api.call("POST", analysis, 201, path=here + "/analysis", json=document, headers=analyzer)
    await api.call("POST", analysis, 403, path=here + "/analysis", json=document, headers=a)
    await api.call(
        "POST", analysis, 422, path=here + "/analysis", json={**document, "participants": -1}, headers=analyzer
    )
    admin = bearer(sign(f"admin-{suffix}", roles=["admin"]))
    await api.call("POST", "/api/broadcasts", 201, json={"message": "Hello all", "level": "info"}, headers=admin)
    await api.call("POST", "/api/broadcasts", 403, json={"message": "Me too"}, headers=a)
    await api.call("POST", "/api/broadcasts", 422, json={"message": "x", "level": "loud"}, headers=admin)
    await api.call("GET", "/api/broadcasts", 200, headers=b)
    await api.call("POST", "/api/dev/login", 403, json={"name": "Mallory", "roles": ["admin"]})

    # Presence and typing.
    presence = "/api/discussions/{discussion_id}/presence"
    await api.call("GET", presence, 200, path=here + "/presence", headers=a)
    typing = "/api/discussions/{discussion_id}/typing"
    await api.call("PUT", typing, 200, path=here + "/typing", json={"typing": True}, headers=a)
    await api.call("PUT", typing, 422, path=here + "/typing", json={"typing": "yes"}, headers=a)
    await api.call("PUT", "/api/presence", 200, json={"status": "away"}, headers=a)

    # Notifications (the worker notifies Alice of Bob's reply and mention) and Web Push.
    notes = await eventually(lambda: api.call("GET", "/api/notifications", 200, headers=a), "alice's notification")
    await api.call("GET", "/api/notifications", 200, query_string={"unread": "true", "limit": "5"}, headers=a)
    await api.call("GET", "/api/notifications", 422, query_string={"unread": "perhaps"}, headers=a)
    read = "/api/notifications/{notification_id}/read"
    await api.call("POST", read, 200, path=f"/api/notifications/{notes[0]['id']}/read", headers=a)
    await api.call("POST", read, 404, path="/api/notifications/nope/read", headers=a)
    await api.call("POST", "/api/notifications/read-all", 200, headers=a)
    await api.call("GET", "/api/notification-preferences", 200, headers=a)
    await api.call("PUT", "/api/notification-preferences", 200, json={"followed": True}, headers=a)
    await api.call("PUT", "/api/notification-preferences", 422, json={"sms": True}, headers=a)
    await api.call("GET", "/api/push/vapid-public-key", 200, headers=a)
    subscription = Browser(f"https://push.example.net/send/{suffix}").subscription
    await api.call("POST", "/api/push/subscriptions", 201, json=subscription, headers=a)
    await api.call("POST", "/api/push/subscriptions", 200, json=subscription, headers=a)
    await api.call("POST", "/api/push/subscriptions", 422, json={**subscription, "endpoint": "ftp://x"}, headers=a)
    await api.call("DELETE", "/api/push/subscriptions", 200, json={"endpoint": subscription["endpoint"]}, headers=a)

    # Long-poll: what happened above, as envelopes of several types, each checked by its schema.
    seen_types: set[str] = set()
    poll_cursor = cursor
    deadline = time.monotonic() + DEADLINE_S
    wanted = {
        "response_posted",
        "response_edited",
        "response_deleted",
        "notification",
        "notification_read",
        "proposition_added",
        "analysis_refreshing",
        "analysis_updated",
        "broadcast",
    }
    while not wanted <= seen_types and time.monotonic() < deadline:
        query = {"discussion": discussion["id"], "cursor": poll_cursor, "timeout": "1"}
        answer = await api.call("GET", "/poll", 200, query_string=query, headers=a)
        seen_types.update(event["type"] for event in answer["events"])
        poll_cursor = answer["cursor"]
    assert wanted <= seen_types, seen_types
    sync = await api.call("GET", "/poll", 200, query_string={"cursor": "garbage", "timeout": "0"}, headers=a)
    assert sync["events"][0]["type"] == "sync_required"
    await api.call("GET", "/poll", 422, query_string={"timeout": "nan"}, headers=a)
    await api.call("GET", "/poll", 404, query_string={"discussion": "nope", "timeout": "0"}, headers=a)
    await api.call("GET", "/poll", 401, query_string={"timeout": "0"})

    # The stream's refusals are plain HTTP answers, described like any other.
    await api.call("GET", "/stream", 404, query_string={"discussion": "nope"}, headers=a)
    await api.call("GET", "/stream", 401)

    walked = {(method, template) for method, template, status in api.seen if 200 <= status < 300}
    for path, item in api.document["paths"].items():
        for method in item:
            if path not in NOT_REST and path in KNOWN_PATHS:
                assert (method.upper(), path) in walked, f"{method.upper()} {path} not exercised"


# The routes this walk knows; routes added later are checked by the fuzzing suite (schemathesis).
KNOWN_PATHS = {
    "/",
    "/api/dev/login",
    "/api/discussions",
    "/api/discussions/{discussion_id}",
    "/api/discussions/{discussion_id}/follow",
    "/api/discussions/{discussion_id}/members/{user_id}",
    "/api/discussions/{discussion_id}/propositions",
    "/api/discussions/{discussion_id}/analysis",
    "/api/broadcasts",
    "/api/discussions/{discussion_id}/presence",
    "/api/discussions/{discussion_id}/responses",
    "/api/discussions/{discussion_id}/typing",
    "/api/me/follows",
    "/api/notification-preferences",
    "/api/notifications",
    "/api/notifications/read-all",
    "/api/notifications/{notification_id}/read",
    "/api/presence",
    "/api/push/subscriptions",
    "/api/push/vapid-public-key",
    "/api/responses/{response_id}",
    "/api/session",
    "/d/{discussion_id}",
    "/docs",
    "/healthz",
    "/metrics",
    "/openapi.json",
    "/poll",
    "/readyz",
    "/static/{filename}",
    "/sw.js",
}


async def test_websocket_messages_keep_to_the_document(app: Quart, client: Client) -> None:
    document = build(app)
    described = document["paths"]["/ws"]["get"]["x-websocket"]
    api = Conformance(document, client)
    alice = sign(f"alice-{uuid.uuid4().hex[:6]}", "Alice")
    r = await client.post("/api/discussions", json={"title": "Rivers"}, headers=bearer(alice))
    discussion = (await r.get_json())["id"]

    async def next_message(connection: Any) -> Any:
        message = json.loads(await asyncio.wait_for(connection.receive(), DEADLINE_S))
        api.check(described["server"], message, f"server message {message.get('type')}")
        return message

    async def reply_to(connection: Any, sent: dict[str, Any], wanted: str) -> Any:
        if wanted != "error":
            api.check(described["client"], sent, f"client message {sent['type']}")
        await connection.send(json.dumps(sent))
        for _ in range(20):  # events (presence, typing) may come first
            message = await next_message(connection)
            if message["type"] == wanted:
                return message
        raise AssertionError(f"no {wanted} after {sent}")

    async with client.websocket("/ws", headers=bearer(alice)) as connection:
        assert (await next_message(connection))["type"] == "hello"
        await reply_to(connection, {"type": "subscribe", "discussion_id": discussion}, "subscribed")
        await reply_to(connection, {"type": "ping"}, "pong")
        await reply_to(connection, {"type": "auth", "token": alice}, "auth_ok")
        await reply_to(connection, {"type": "typing", "discussion_id": discussion, "typing": True}, "typing_started")
        await client.post(f"/api/discussions/{discussion}/responses", json={"body": "Wide"}, headers=bearer(alice))
        await reply_to(connection, {"type": "presence", "status": "online"}, "response_posted")
        bad = await reply_to(connection, {"type": "typing", "discussion_id": discussion, "typing": "yes"}, "error")
        assert bad["code"] == "invalid_field"
        await reply_to(connection, {"type": "unsubscribe", "discussion_id": discussion}, "unsubscribed")
    # A refused upgrade is a described HTTP answer.
    assert "404" in document["paths"]["/ws"]["get"]["responses"]
    assert "403" in document["paths"]["/ws"]["get"]["responses"]


async def test_rate_limited_answers_are_declared(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}",
        jwt_secret=TEST_JWT_SECRET,
        data_dir=tmp_path / ".parley",
        rate_limit_per_min=1,
        check_responses=True,
    )
    quart_app = create_app(settings)
    async with quart_app.test_app() as test_app:
        client = test_app.app.test_client()  # type: ignore[attr-defined]
        api = Conformance(build(quart_app), client)
        alice = bearer(sign(f"alice-{uuid.uuid4().hex[:6]}", "Alice"))
        discussion = await api.call("POST", "/api/discussions", 201, json={"title": "Lakes"}, headers=alice)
        path = f"/api/discussions/{discussion['id']}/responses"
        template = "/api/discussions/{discussion_id}/responses"
        await api.call("POST", template, 201, path=path, json={"body": "one"}, headers=alice)
        # A calendar-minute window: the second action is refused, unless the first one's minute
        # ended in between; then the third is.
        r = await client.post(path, json={"body": "two"}, headers=alice)
        if r.status_code == 201:
            r = await client.post(path, json={"body": "three"}, headers=alice)
        assert r.status_code == 429 and r.headers["Retry-After"].isdigit()
        body = await r.get_json()
        schema = api.schema_for("POST", template, 429, "application/json")
        assert schema is not None
        api.check(schema, body, "429")
        assert "Retry-After" in api.document["paths"][template]["post"]["responses"]["429"]["headers"]
