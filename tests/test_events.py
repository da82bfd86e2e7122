"""Value types: cursors round-trip, and the SSE encoder cannot be made to inject fields."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from app.log.cursor import Cursor, InvalidCursor, Position
from app.log.events import Event, envelope_body, sse_frame

epochs = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=32)
numbers = st.integers(min_value=0, max_value=10**15 - 1)


@given(epochs, numbers, numbers)
def test_cursors_round_trip_and_order(epoch: str, ms: int, seq: int) -> None:
    cursor = Cursor(epoch, Position(ms, seq))
    assert Cursor.parse(str(cursor)) == cursor
    assert Position(ms, seq) < Position(ms, seq + 1) < Position(ms + 1, 0)


@given(st.text(max_size=200))
def test_anything_else_is_not_a_cursor_or_is_one_exactly(text: str) -> None:
    try:
        cursor = Cursor.parse(text)
    except InvalidCursor:
        return
    assert str(cursor) == text.strip()


@given(st.text(max_size=100), st.text(max_size=100), st.binary(max_size=300))
def test_sse_frames_have_exactly_the_fields_given(event_id: str, event_type: str, data: bytes) -> None:
    frame = sse_frame(event_id, event_type, data)
    assert frame.endswith(b"\n\n")
    lines = frame[:-2].split(b"\n")
    names = [line.split(b":", 1)[0] for line in lines]
    assert names[0] == b"id" and names[1] == b"event"
    assert all(name == b"data" for name in names[2:])
    # No blank line inside the frame: it cannot be split into two events.
    assert b"" not in lines


def test_the_envelope_gets_its_id_without_being_reencoded() -> None:
    body = envelope_body("response_posted", discussion_id="d1", user={"id": "u", "name": "Ü"}, payload={"a": [1]})
    event = Event.from_log("ep0ch", Position(17, 3), "d:d1", "response_posted", body)
    envelope = json.loads(event.envelope)
    assert list(envelope) == ["id", "type", "ts", "discussion_id", "user", "payload"]
    assert envelope["id"] == "ep0ch.17-3" == event.cursor
    assert envelope["user"]["name"] == "Ü"
    assert event.sse.startswith(b"id: ep0ch.17-3\nevent: response_posted\ndata: {")
