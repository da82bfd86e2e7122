"""Fuzzing the REST API from its own OpenAPI description with Schemathesis, against a real server
process (issue 11).

Every operation of `/openapi.json` gets generated requests, valid ones (positive) and ones that
break the schema (negative: wrong types, missing fields, odd strings, bad auth), half of them
aimed at a discussion and a response that exist so they reach past the 404. Per request:
- no 500: the server runs with `PARLEY_CHECK_RESPONSES=1`, so an answer that breaks its
  declaration (an undeclared status or error code, a body of the wrong shape) is a 500 too;
- a refused request (4xx) changed nothing in the database.
The streams (`/stream`, `/ws`) are not request/response and are fuzzed elsewhere (WebSocket:
`test_fuzz_ws.py`); `/poll` is fuzzed with `timeout=0` so a case does not wait 25 s.

Bounded: up to `CASES_PER_OPERATION` per operation and mode, in rounds, within `BUDGET_S`.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from .support import Server, bearer, sign

pytestmark = pytest.mark.slow

BUDGET_S = 120.0
ROUNDS = (10, 25, 60)  # examples per operation and mode, per round: all get some before any get many
REQUEST_TIMEOUT_S = 10.0
NOT_REQUEST_RESPONSE = ("/stream", "/ws")

# What a refused request must leave as it was (the notification worker's own asynchronous
# writes are not a request's doing, so `notifications` rows are not counted).
FINGERPRINT = {
    "discussions": "SELECT count(*) FROM discussions",
    "members": "SELECT count(*) FROM discussion_members",
    "responses": "SELECT count(*), coalesce(sum(deleted), 0), count(edited_at) FROM responses",
    "bodies": "SELECT coalesce(sum(length(body)), 0) FROM responses",
    "follows": "SELECT count(*), coalesce(sum(last_read_response_id), 0) FROM follows",
    "preferences": "SELECT count(*), coalesce(sum(replies + mentions + followed + common_ground + push), 0) "
    "FROM notification_preferences",
    "subscriptions": "SELECT count(*) FROM push_subscriptions",
    "users": "SELECT count(*) FROM users",
    "read": "SELECT count(read_at) FROM notifications",
}


def fingerprint(server: Server) -> dict[str, tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(server.workdir / "parley.db", timeout=10)) as db:
        return {name: tuple(db.execute(sql).fetchone()) for name, sql in FINGERPRINT.items()}


@pytest.fixture
def target(start_server: Callable[..., Server]) -> tuple[Server, dict[str, str], dict[str, str]]:
    server = start_server(PARLEY_CHECK_RESPONSES="1", PARLEY_RATE_LIMIT_PER_MIN="1000000")
    auth = bearer(sign("fuzz", "Fuzz"))
    with httpx.Client(base_url=server.url, headers=auth, timeout=10) as client:
        discussion = client.post("/api/discussions", json={"title": "Fuzz"}).json()["id"]
        response = client.post(f"/api/discussions/{discussion}/responses", json={"body": "seed"}).json()["id"]
    existing = {"discussion_id": discussion, "response_id": response, "filename": "app.js"}
    return server, auth, existing


def strategies(schema: Any, existing: dict[str, str]) -> dict[str, st.SearchStrategy[Any]]:
    """Per operation and mode: free values, or the existing ids for its path parameters."""
    found: dict[str, st.SearchStrategy[Any]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in NOT_REQUEST_RESPONSE:
            continue
        names = {parameter.name for parameter in operation.path_parameters}
        known = {name: value for name, value in existing.items() if name in names}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            choices = [operation.as_strategy(mode)]
            if known and known.keys() == names:
                choices.append(operation.as_strategy(mode, path_parameters=known))
            found[f"{mode.value} {operation.method.upper()} {operation.path}"] = st.one_of(choices)
    return found


@pytest.mark.timeout(BUDGET_S + 90)  # the budget, the server's start and the last round's stragglers
def test_fuzzed_rest_requests_get_no_500_and_refusals_store_nothing(
    target: tuple[Server, dict[str, str], dict[str, str]],
) -> None:
    server, auth, existing = target
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    by_operation = strategies(schema, existing)
    assert len(by_operation) >= 40, sorted(by_operation)
    deadline = time.monotonic() + BUDGET_S
    failures: list[str] = []
    statuses: dict[int, int] = {}
    cases = 0

    def run(label: str, strategy: st.SearchStrategy[Any], examples: int) -> None:
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def one(case: Any) -> None:
            nonlocal cases
            if time.monotonic() > deadline:
                return
            if case.path == "/poll":
                case.query = {**(case.query or {}), "timeout": "0"}
            before = fingerprint(server)
            response = case.call(base_url=server.url, headers=auth, timeout=REQUEST_TIMEOUT_S)
            after = fingerprint(server)
            cases += 1
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            problem = None
            if response.status_code >= 500:
                problem = f"{response.status_code} {response.text[:300]}"
            elif response.status_code >= 400 and after != before:
                changed = {name for name in before if before[name] != after[name]}
                problem = f"refused with {response.status_code} but changed {sorted(changed)}"
            if problem is not None:
                failures.append(f"{label}: {problem}\n    {case.as_curl_command()}")

        try:
            one()
        except Unsatisfiable:  # negative mode for an operation with nothing to break
            unbreakable.add(label)

    unbreakable: set[str] = set()
    for examples in ROUNDS:
        for label, strategy in by_operation.items():
            if time.monotonic() > deadline:
                break
            if label not in unbreakable:
                run(label, strategy, examples)
    pairs = len(by_operation) - len(unbreakable)
    print(f"\nREST fuzz: {cases} cases over {pairs} operation/mode pairs; statuses {dict(sorted(statuses.items()))}")
    assert failures == [], "\n".join(failures[:20])
    assert cases >= 500, f"only {cases} cases ran within {BUDGET_S:.0f}s"
    assert "Traceback" not in server.log(), server.log()[-3000:]
