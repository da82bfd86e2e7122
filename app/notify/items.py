"""What in a journal event may notify someone (`parse`): a response (`Posted`) or significant
new common ground (`CommonGround`), read once from the event's envelope."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.domain.notifications import excerpt, mentioned_names
from app.log import topics
from app.log.events import Event

_DISCUSSION_PREFIX = topics.discussion("")


@dataclass(frozen=True, slots=True)
class Posted:
    """A `response_posted`: a reply, mentions, activity for followers."""

    cursor: str
    discussion_id: str
    actor: dict[str, str]
    response_id: int
    parent_id: int | None
    names: list[str]
    excerpt: str


@dataclass(frozen=True, slots=True)
class CommonGround:
    """An `analysis_updated` that lists significant new common ground (FR-014)."""

    cursor: str
    discussion_id: str
    actor: dict[str, str]
    excerpt: str


Item = Posted | CommonGround


def parse(event: Event) -> Item | None:
    """What in this journal event may notify someone, if anything."""
    if not event.topic.startswith(_DISCUSSION_PREFIX) or event.type not in ("response_posted", "analysis_updated"):
        return None
    envelope = event.as_dict()
    discussion_id = event.topic[len(_DISCUSSION_PREFIX) :]
    actor: dict[str, str] = envelope.get("user") or {}
    payload = envelope.get("payload") or {}
    if event.type == "response_posted":
        response: dict[str, Any] = payload["response"]
        body: str = response.get("body", "")
        parent = response.get("parent_id")
        parent_id = int(parent) if parent else None
        return Posted(
            event.cursor, discussion_id, actor, int(response["id"]), parent_id, mentioned_names(body), excerpt(body)
        )
    # The analysis lists new common ground as proposition ids (their text is in the document's
    # `propositions`, app/analysis/rules.py) or as `{"id", "text"}` objects.
    new = payload.get("new_common_ground")
    if not new or not isinstance(new, list):
        return None
    first = new[0]
    if isinstance(first, dict):
        text = str(first.get("text", ""))
    else:
        texts = {p.get("id"): p.get("text") for p in payload.get("propositions") or [] if isinstance(p, dict)}
        text = str(texts.get(first) or "")
    return CommonGround(
        event.cursor, discussion_id, actor, excerpt(text) if text else f"{len(new)} new point(s) of common ground"
    )


def names_by_discussion(items: list[Item]) -> dict[str, set[str]]:
    """Discussion id -> the names mentioned in it (whose readers the store then asks for)."""
    names: dict[str, set[str]] = {}
    for item in items:
        if isinstance(item, Posted) and item.names:
            names.setdefault(item.discussion_id, set()).update(item.names)
    return names
