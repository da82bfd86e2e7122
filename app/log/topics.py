"""Topic names: what an event is published to and a connection subscribes to.

One place builds them, so the log, the hub and the transports always agree.
"""

from __future__ import annotations

BROADCAST = "b"


def discussion(discussion_id: str) -> str:
    return f"d:{discussion_id}"


def user(user_id: str) -> str:
    return f"u:{user_id}"
