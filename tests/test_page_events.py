"""The server and the page agree on every message type: `app` is the source of truth.

EventSource drops a named event that has no listener, so a type missing from
`static/parley.js` would silently never reach the page over SSE; a type the page lists that the
server never sends is a stale copy (a rename the page missed). Each check below fails when the
two lists differ in either direction, and says which types differ.
"""

from __future__ import annotations

import re

import pytest

from app.domain.notifications import NOTIFICATION_TYPES
from app.log.events import EVENT_TYPES
from app.transports.ws_messages import CONTROL_MESSAGES

from .support import ROOT

# A JS string literal, single- or double-quoted.
_LITERAL = re.compile(r"""(["'])(\w+)\1""")


def js_string_list(path: str, pattern: str) -> list[str]:
    """The string literals of one array or Set literal in a static file, refusing anything else
    in it (a spread, a variable, a computed name would hide a type from this test)."""
    source = (ROOT / path).read_text()
    block = re.search(pattern, source, re.S)
    assert block is not None, f"{path} no longer matches {pattern!r}"
    return literals(block.group(1))


def literals(body: str) -> list[str]:
    body = re.sub(r"//[^\n]*", "", body)
    leftover = _LITERAL.sub("", body).replace(",", "").strip()
    assert leftover == "", f"only string literals expected in the list, found {leftover!r}"
    return [match.group(2) for match in _LITERAL.finditer(body)]


def differences(page: list[str], server: frozenset[str] | set[str]) -> dict[str, list[str]]:
    return {
        "sent by the server, not listed by the page": sorted(set(server) - set(page)),
        "listed by the page, never sent by the server": sorted(set(page) - set(server)),
        "listed twice by the page": sorted({t for t in page if page.count(t) > 1}),
    }


NO_DIFFERENCE = {
    "sent by the server, not listed by the page": [],
    "listed by the page, never sent by the server": [],
    "listed twice by the page": [],
}


def test_parley_js_listens_for_exactly_the_event_types_the_server_sends() -> None:
    listed = js_string_list("static/parley.js", r"const EVENT_TYPES = \[(.*?)\];")
    assert differences(listed, EVENT_TYPES) == NO_DIFFERENCE


def test_parley_js_knows_exactly_the_websocket_control_messages() -> None:
    control = {message.model_fields["type"].default for message in CONTROL_MESSAGES}
    listed = js_string_list("static/parley.js", r"const CONTROL_TYPES = new Set\(\[(.*?)\]\);")
    assert differences(listed, control) == NO_DIFFERENCE


def test_the_service_worker_titles_every_notification_type() -> None:
    titled = _sw_titles()
    assert differences(titled, set(NOTIFICATION_TYPES)) == NO_DIFFERENCE


def _sw_titles() -> list[str]:
    source = (ROOT / "static" / "sw.js").read_text()
    block = re.search(r"const TITLES = \{(.*?)\n\};", source, re.S)
    assert block is not None, "static/sw.js no longer declares TITLES"
    return re.findall(r"^\s*(\w+):", block.group(1), re.M)


@pytest.mark.parametrize(
    ("page", "server", "missing", "extra"),
    [
        (["a", "b"], {"a", "b", "c"}, ["c"], []),
        (["a", "b", "z"], {"a", "b"}, [], ["z"]),
    ],
)
def test_the_comparison_fails_in_either_direction(
    page: list[str], server: set[str], missing: list[str], extra: list[str]
) -> None:
    found = differences(page, server)
    assert found != NO_DIFFERENCE
    assert found["sent by the server, not listed by the page"] == missing
    assert found["listed by the page, never sent by the server"] == extra


def test_the_parser_refuses_a_list_it_cannot_read_whole() -> None:
    with pytest.raises(AssertionError, match="only string literals"):
        literals('"a", ...MORE, "b"')
    assert literals('"a", \'b\', // a comment\n "c"') == ["a", "b", "c"]
