"""Who is notified of what: the fan-out rules (issue 6, FR-006..010), as pure functions.

No transport, no database: the worker (`app.notify.rules`, `app.notify.store`) gathers the
facts (the parent's author, who the mentioned names are, the followers, everyone's
preferences) and asks `plan` what to do. Rules:

- a reply notifies the parent response's author (`reply`, priority normal);
- `@name` notifies that user (`mention`, priority high) if they can read the discussion;
- a user who is both replied to and mentioned gets one notification, the mention (higher),
  or the reply if they switched mentions off;
- followers get an `activity` update (unread count, last activity: FR-008) and, when they
  opted in (`followed`), an `activity` notification: at most one unread per discussion, so a
  busy discussion does not send one per response (the worker enforces "unread");
- nobody is notified of their own action, and each kind can be switched off (FR-010);
- significant new common ground (FR-014, listed by the analysis in `analysis_updated`)
  notifies followers who kept `common_ground` on.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from app.domain.models import Notification, NotificationPreferences
from app.log.events import rfc3339

NOTIFICATION_TYPES = ("reply", "mention", "activity", "common_ground", "broadcast")

# Preference keys (API.md), and what a user who never chose gets: the columns' defaults in
# `NotificationPreferences`, the one place they are written. `followed` is opt-in: the issue
# says followers get activity *notifications* only "if they opted in".
PREFERENCE_KEYS = ("replies", "mentions", "followed", "common_ground", "push")
DEFAULT_PREFERENCES: Mapping[str, bool] = MappingProxyType(
    {key: bool(NotificationPreferences.model_fields[key].default) for key in PREFERENCE_KEYS}
)


def wants(preferences: Mapping[str, Mapping[str, bool]], user_id: str, key: str) -> bool:
    """Whether `user_id` wants `key`, given the preferences of the users who have a row."""
    return preferences.get(user_id, DEFAULT_PREFERENCES).get(key, DEFAULT_PREFERENCES[key])


# `@name`: the token's display name (API.md, Identity). Not preceded by a word character,
# so `mail@example.org` mentions nobody; a trailing dot ends a sentence, not the name.
_MENTION_RE = re.compile(r"(?<![\w@])@([\w][\w.-]{0,199})")
MAX_MENTIONS = 20
EXCERPT_CHARS = 140


def mentioned_names(body: str) -> list[str]:
    """The distinct names mentioned in a body, in order, at most `MAX_MENTIONS`."""
    names: dict[str, None] = {}
    for match in _MENTION_RE.finditer(body):
        names.setdefault(match.group(1).rstrip(".-").lower(), None)
        if len(names) == MAX_MENTIONS:
            break
    return list(names)


def excerpt(body: str) -> str:
    flat = " ".join(body.split())
    return flat if len(flat) <= EXCERPT_CHARS else flat[: EXCERPT_CHARS - 1] + "…"


@dataclass(frozen=True, slots=True)
class Planned:
    user_id: str
    type: str
    priority: str


@dataclass(frozen=True, slots=True)
class Plan:
    notifications: list[Planned]
    # Followers to send an `activity` update (unread count and last activity) to.
    activity_updates: list[str]


def plan(
    *,
    actor_id: str,
    parent_author_id: str | None,
    mentioned_user_ids: Collection[str],
    follower_ids: Collection[str],
    preferences: Mapping[str, Mapping[str, bool]],
) -> Plan:
    """What one new response causes. `mentioned_user_ids` must hold only users who can read
    the discussion; `preferences` maps a user id to their preferences (missing: defaults)."""

    notifications: list[Planned] = []
    notified: set[str] = {actor_id}
    for user_id in mentioned_user_ids:
        if user_id not in notified and wants(preferences, user_id, "mentions"):
            notified.add(user_id)
            notifications.append(Planned(user_id, "mention", "high"))
    if (
        parent_author_id is not None
        and parent_author_id not in notified
        and wants(preferences, parent_author_id, "replies")
    ):
        notified.add(parent_author_id)
        notifications.append(Planned(parent_author_id, "reply", "normal"))
    updates = sorted(set(follower_ids) - {actor_id})
    for user_id in updates:
        if user_id not in notified and wants(preferences, user_id, "followed"):
            notifications.append(Planned(user_id, "activity", "normal"))
    return Plan(notifications, updates)


def notification_json(notification: Notification) -> dict[str, Any]:
    """As API.md lists it (plus `excerpt`), and as the `notification` event carries it."""
    actor = None
    if notification.actor_id is not None:
        actor = {"id": notification.actor_id, "name": notification.actor_name or notification.actor_id}
    return {
        "id": notification.id,
        "type": notification.type,
        "priority": notification.priority,
        "discussion_id": notification.discussion_id,
        "response_id": None if notification.response_id is None else str(notification.response_id),
        "actor": actor,
        "excerpt": notification.excerpt,
        "created_at": rfc3339(notification.created_at),
        "read_at": None if notification.read_at is None else rfc3339(notification.read_at),
    }


def plan_common_ground(
    *, actor_id: str, follower_ids: Collection[str], preferences: Mapping[str, Mapping[str, bool]]
) -> list[Planned]:
    """FR-014: followers who kept `common_ground` on hear of significant new common ground."""
    return [
        Planned(user_id, "common_ground", "normal")
        for user_id in sorted(set(follower_ids) - {actor_id})
        if wants(preferences, user_id, "common_ground")
    ]
