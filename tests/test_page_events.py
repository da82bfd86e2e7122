"""The page's real-time client listens for every event type the server sends.

EventSource drops a named event that has no listener, so a type missing from
`static/parley.js` would silently never reach the page over SSE.
"""

from __future__ import annotations

import re

from app.log.events import EVENT_TYPES

from .support import ROOT


def test_parley_js_listens_for_every_event_type_the_server_sends() -> None:
    source = (ROOT / "static" / "parley.js").read_text()
    block = re.search(r"const EVENT_TYPES = \[(.*?)\];", source, re.S)
    assert block is not None, "static/parley.js no longer declares EVENT_TYPES"
    listened = set(re.findall(r'"(\w+)"', block.group(1)))
    assert listened == set(EVENT_TYPES)
