"""The bytes of an SSE stream that are not events, shared by both `/stream` paths (Quart's
`transports/sse.py` and the lean front's `transports/lean_sse.py`; PITFALLS, "SSE and HTTP/2").

The heartbeat frame is chosen here and nowhere else: the session says *when* one is due
(`StreamSession.next`/`tick`), the transports write their stream's `HeartbeatForm.heartbeat`
(the lean path chunked once). Two forms: `:` comments (the default), or with
`?heartbeat=event` a `hello` event first and `heartbeat` events, which an EventSource can see
(it cannot see comments), so a page can tell a silently dropped connection by a deadline.
"""

from __future__ import annotations

import json
import random
from typing import Literal

from app.core.session import End
from app.log.events import sse_frame

RETRY_MS = 2_000
# `retry:` and a comment, so proxies and PaaS routers see a first byte at once.
PREAMBLE = f"retry: {RETRY_MS}\n: connected\n\n".encode()
# The smallest comment line (2 bytes; 8 with HTTP/1.1 chunk framing: 16 B/min at the default
# 30 s). A comment needs no blank line after it: nothing is dispatched.
HEARTBEAT = b":\n"
# `?heartbeat=event`: 45 bytes every PARLEY_HEARTBEAT_S (default 30 s), well under 1 KB/min.
# Its data and the `hello`'s are the WebSocket's `Heartbeat` and `Hello` (transports/ws_messages.py).
EVENT_HEARTBEAT = sse_frame(None, "heartbeat", b'{"type":"heartbeat"}')
SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache, no-transform",
    # Tell nginx-style proxies not to buffer. No Transfer-Encoding: HTTP/2 forbids it.
    "X-Accel-Buffering": "no",
}
# After `retry_later`, reconnect after this long; random in the range, so the clients of a
# Redis that comes back do not all return in the same instant.
RETRY_LATER_MS = (2_000, 6_000)


def retry_later() -> bytes:
    """The whole body of a stream we cannot serve *now* (Redis unreachable, the server
    stopping): a `retry:` hint, no event, and the end.

    Never a 503: by the WHATWG rules an EventSource whose reconnection gets any status but 200
    (or a non-`text/event-stream` type) fails for good and never reconnects, so a plain
    EventSource (curl, a third-party page) would be lost for a passing fault. A 200 stream that
    ends makes it reconnect after `retry` ms, with its `Last-Event-ID`: it misses nothing.
    """
    return f"retry: {random.randint(*RETRY_LATER_MS)}\n: unavailable for now, reconnect\n\n".encode()


def last_words(end: End) -> bytes:
    """The frame that ends a stream: its notice, if any. `auth_expired` has no `id:` line, so
    the browser's `Last-Event-ID` stays where it was."""
    if end.notice is None:
        return b""
    return end.notice.sse if end.notice_moves_cursor else end.notice.sse_without_id


class HeartbeatForm:
    """How one stream shows it is alive (`/stream?heartbeat=comment|event`). Two instances,
    shared by every stream: `heartbeat_form()`."""

    __slots__ = ("heartbeat", "visible")

    def __init__(self, visible: bool) -> None:
        self.visible = visible
        self.heartbeat = EVENT_HEARTBEAT if visible else HEARTBEAT

    def preamble(self, heartbeat_s: float, expires_in_s: float) -> bytes:
        """The stream's first bytes; with events, a `hello`: the interval and the token's expiry."""
        if not self.visible:
            return PREAMBLE
        hello = {"type": "hello", "heartbeat_s": heartbeat_s, "expires_in_s": round(expires_in_s, 1)}
        return PREAMBLE + sse_frame(None, "hello", json.dumps(hello, separators=(",", ":")).encode())


COMMENTS = HeartbeatForm(visible=False)
EVENTS = HeartbeatForm(visible=True)


def heartbeat_form(name: Literal["comment", "event"]) -> HeartbeatForm:
    return EVENTS if name == "event" else COMMENTS
