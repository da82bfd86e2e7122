"""docs/API.md, the contract's overview, agrees with the server's own description (issue 12).

Every operation named in API.md exists and every operation of the server is named there (except
those under "Not built yet", which must *not* exist yet); the request fields API.md lists are
the body model's; its error code table is the codes the operations declare; its event table is
`EVENT_TYPES` with each payload's fields.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from quart import Quart

from app.api.openapi import build
from app.log.events import EVENT_TYPES
from app.main import create_app
from app.settings import Settings

API_MD = Path(__file__).resolve().parent.parent / "docs" / "API.md"
OPERATION = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/[^\s`?]*)(?:\?[^\s`]*)?( \{.*?\})?`")
NOT_BUILT = "## Not built yet"
# Answered by the framework for any path, not by an operation.
OUTSIDE_ROUTES = {(405, "method_not_allowed")}


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data_dir = tmp_path_factory.mktemp("parley")
    app: Quart = create_app(Settings(database_url=f"sqlite+aiosqlite:///{data_dir / 'p.db'}", data_dir=data_dir))
    return build(app)


@pytest.fixture(scope="module")
def text() -> str:
    return API_MD.read_text(encoding="utf-8")


def shape(path: str) -> str:
    """`/api/discussions/{id}` and `/api/discussions/{discussion_id}` are the same route."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def sections(text: str) -> Iterator[tuple[str, str]]:
    """(the `## ` heading, each line under it)."""
    heading = ""
    for line in text.splitlines():
        if line.startswith("## "):
            heading = line
        yield heading, line


def top_level_keys(braces: str) -> set[str]:
    """`{"a", "b": {"c"}}` -> {"a", "b"}."""
    keys, depth = set(), 0
    for token in re.finditer(r'[{}]|"([a-z_0-9]+)"', braces):
        if token.group(0) == "{":
            depth += 1
        elif token.group(0) == "}":
            depth -= 1
        elif depth == 1:
            keys.add(token.group(1))
    return keys


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def test_every_operation_is_in_api_md_and_nothing_more(document: dict[str, Any], text: str) -> None:
    served = {(method.upper(), shape(path)) for path, item in document["paths"].items() for method in item}
    listed, promised = set(), set()
    for heading, line in sections(text):
        for match in OPERATION.finditer(line):
            (promised if heading == NOT_BUILT else listed).add((match.group(1), shape(match.group(2))))
    assert sorted(served - listed) == [], "operations the server has that docs/API.md does not name"
    assert sorted(listed - served) == [], "operations docs/API.md names that the server does not have"
    assert sorted(promised & served) == [], "built now: move these out of 'Not built yet' in docs/API.md"


def test_request_fields_in_api_md_are_the_body_models(document: dict[str, Any], text: str) -> None:
    checked = 0
    for heading, line in sections(text):
        if heading == NOT_BUILT:
            continue
        for match in OPERATION.finditer(line):
            if match.group(3) is None:
                continue
            method, path = match.group(1), shape(match.group(2))
            operation = next(
                item[method.lower()] for template, item in document["paths"].items() if shape(template) == path
            )
            body = resolve(document, operation["requestBody"]["content"]["application/json"]["schema"])
            assert top_level_keys(match.group(3)) == set(body["properties"]), f"{method} {path}"
            checked += 1
    assert checked >= 8


def test_error_code_table_is_what_operations_declare(document: dict[str, Any], text: str) -> None:
    table = set()
    for status, code in re.findall(r"^\| (\d{3}) \| `([a-z_]+)` \|", text, flags=re.MULTILINE):
        table.add((int(status), code))
    declared = set()
    for item in document["paths"].values():
        for operation in item.values():
            for status, answer in operation["responses"].items():
                schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
                if status.startswith(("4", "5")) and "allOf" in schema:  # not /readyz's 503 reply
                    enum = schema["allOf"][1]
                    for code in enum["properties"]["error"]["properties"]["code"]["enum"]:
                        declared.add((int(status), code))
    assert sorted(declared - table) == [], "codes the operations declare that docs/API.md's table lacks"
    assert sorted(table - declared - OUTSIDE_ROUTES) == [], "codes in docs/API.md's table that no operation declares"


def test_event_table_is_every_event_type_with_its_payload(document: dict[str, Any], text: str) -> None:
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| `?(\{[^|`]*\}|\*provisional\*)`? \|", text, flags=re.MULTILINE))
    assert set(rows) == EVENT_TYPES
    schemas = document["components"]["schemas"]
    for event_type, payload in rows.items():
        envelope = schemas[document["x-event-types"][event_type].rsplit("/", 1)[-1]]
        model = resolve(document, envelope["properties"]["payload"])
        if payload == "*provisional*":
            assert model.get("additionalProperties") is True, f"{event_type}: described in full now, list its fields"
            continue
        assert top_level_keys(payload) == set(model.get("properties", {})), event_type
