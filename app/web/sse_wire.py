"""The bytes of an SSE stream that are not events, shared by both `/stream` paths (Quart's
`transports/sse.py` and the lean front's `transports/lean_sse.py`; PITFALLS, "SSE and HTTP/2").

The heartbeat frame is chosen here and nowhere else: the session says *when* one is due
(`StreamSession.next`/`tick`), the transports write `HEARTBEAT` (the lean path chunked once).
"""

from __future__ import annotations

import random

from app.core.session import End

RETRY_MS = 2_000
# `retry:` and a comment, so proxies and PaaS routers see a first byte at once.
PREAMBLE = f"retry: {RETRY_MS}\n: connected\n\n".encode()
HEARTBEAT = b": heartbeat\n\n"
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
