"""What one published event is made of, before it has an envelope and a position."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Publication:
    """One event of a `Node.publish_many` batch (the arguments of `Node.publish`)."""

    topic: str
    event_type: str
    discussion_id: str | None
    user: dict[str, str] | None
    payload: dict[str, Any]
    durable: bool = True
