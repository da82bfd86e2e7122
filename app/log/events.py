"""The event envelope (API.md, FR-030) and its wire encodings, each made once per event.

An envelope is JSON: `{"id","type","ts","discussion_id","user","payload"}`. Publishers build
the body without `id`; the log assigns the position, and `Event.from_log` splices the cursor in
front of the body. Every reader of the event then shares the same bytes: the SSE frame and the
WebSocket text are computed lazily, once, and reused for every subscriber (encoding per client
cost 3.6x on our measurements).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from app.log.cursor import Cursor, Position

EVENT_TYPES = frozenset(
    {
        "response_posted",
        "response_edited",
        "response_deleted",
        "analysis_refreshing",
        "analysis_updated",
        "typing_started",
        "typing_stopped",
        "user_joined",
        "user_left",
        "presence_changed",
        "notification",
        "notification_read",
        "activity",
        "broadcast",
        "sync_required",
        "auth_expired",
        # A proposition was added to the discussion (issue 10); the analysis follows.
        "proposition_added",
        # Sent once before an idle stream is closed (FR-035, app/core/presence_tracker.py).
        "session_idle",
        # On a user's own topic when they were added to / removed from a private discussion
        # (app/domain/membership.py); after `access_revoked` their streams carry none of it.
        "access_granted",
        "access_revoked",
    }
)


def rfc3339(moment: datetime | None = None) -> str:
    """RFC 3339 UTC with milliseconds, as API.md writes times: `2026-11-25T18:00:00.123Z`."""
    moment = moment or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def envelope_body(
    event_type: str,
    *,
    discussion_id: str | None,
    user: dict[str, str] | None,
    payload: dict[str, Any],
) -> bytes:
    """The envelope without its `id`, as stored in the log. Starts with `{"type":`."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    return dumps(
        {
            "type": event_type,
            "ts": rfc3339(),
            "discussion_id": discussion_id,
            "user": user,
            "payload": payload,
        }
    )


def _clean_field(value: str) -> str:
    # An `id:` or `event:` value with CR/LF would inject fields into the SSE stream.
    return value.replace("\r", "").replace("\n", "")


def sse_frame(event_id: str | None, event_type: str, data: bytes) -> bytes:
    """One SSE event. `data` is compact JSON (no newlines), so one `data:` line suffices;
    anything else is split into several `data:` lines, as the SSE format requires."""
    lines = []
    if event_id is not None:
        lines.append(b"id: " + _clean_field(event_id).encode())
    lines.append(b"event: " + _clean_field(event_type).encode())
    for part in data.splitlines() or [b""]:
        lines.append(b"data: " + part)
    return b"\n".join(lines) + b"\n\n"


@dataclass(slots=True, eq=False)
class Event:
    """An event as read from the log: its position, topic and complete envelope bytes."""

    position: Position
    cursor: str
    topic: str
    type: str
    envelope: bytes
    _sse: bytes | None = field(default=None, repr=False)
    _text: str | None = field(default=None, repr=False)

    @classmethod
    def from_log(cls, epoch: str, position: Position, topic: str, event_type: str, body: bytes) -> Event:
        cursor = str(Cursor(epoch, position))
        # body is `{"type":...}`: put the id first without parsing and re-encoding the JSON.
        envelope = b'{"id":"' + cursor.encode() + b'",' + body[1:]
        return cls(position, cursor, topic, event_type, envelope)

    @classmethod
    def synthetic(cls, cursor: Cursor, event_type: str, payload: dict[str, Any], *, topic: str = "") -> Event:
        """An event made for one connection (e.g. `sync_required`), never stored in the log."""
        body = envelope_body(event_type, discussion_id=None, user=None, payload=payload)
        return cls.from_log(cursor.epoch, cursor.position, topic, event_type, body)

    @property
    def sse(self) -> bytes:
        if self._sse is None:
            self._sse = sse_frame(self.cursor, self.type, self.envelope)
        return self._sse

    @property
    def sse_without_id(self) -> bytes:
        """For notices that must not move the browser's `Last-Event-ID` (e.g. `auth_expired`)."""
        return sse_frame(None, self.type, self.envelope)

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self.envelope.decode()
        return self._text

    def as_dict(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.envelope)
        return value


def now_ms() -> int:
    return time.time_ns() // 1_000_000
