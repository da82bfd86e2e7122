"""Who is notified of what, for a whole batch of journal events (FR-006..010, FR-014).

The per-response rules (replies, mentions, followers, preferences) are pure functions in
`app.domain.notifications`; this module applies those rules to each of a batch's events
(`app.notify.items`) with the facts the store read for the whole batch (`decide`), and holds the
two decisions that span events and users: at most one unread `activity` notification per
follower and discussion, and whether a user gets a Web Push now (`should_push`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from app.core.active_users import ActiveUsers
from app.domain.models import Discussion, utcnow
from app.domain.notifications import Planned, plan, plan_common_ground, wants
from app.notify.items import CommonGround, Item, Posted
from app.notify.store import Facts, Recipients


def mentioned(item: Posted, discussion: Discussion, facts: Facts) -> list[str]:
    """The users `item` mentions, in order; NFR-014: only those who may read the discussion
    (`facts.readers`, from the domain's one read rule, `app.domain.access`)."""
    readers = facts.readers.get(discussion.id, set())
    return list(dict.fromkeys(u for name in item.names for u in facts.named.get(name, []) if u in readers))


def concerned(items: list[Item], facts: Facts) -> set[str]:
    """Everyone the batch may notify: followers, mentioned readers, replied-to authors."""
    users = {user_id for item in items for user_id in facts.followers.get(item.discussion_id, [])}
    for item in items:
        discussion = facts.discussions.get(item.discussion_id)
        if isinstance(item, Posted) and discussion is not None:
            users.update(mentioned(item, discussion, facts))
            if item.parent_id is not None and item.parent_id in facts.parent_authors:
                users.add(facts.parent_authors[item.parent_id])
    return users


@dataclass
class Decision:
    notify: list[tuple[Item, Planned]] = field(default_factory=list)
    # Followers to send one `activity` update (unread count, last activity) per discussion.
    activity: dict[str, set[str]] = field(default_factory=dict)


def decide(items: list[Item], facts: Facts, recipients: Recipients) -> Decision:
    decision = Decision()
    # Batched activity: one unread `activity` notification per follower and discussion, so
    # a busy discussion does not send one per response.
    has_activity = set(recipients.unread_activity)
    for item in items:
        discussion = facts.discussions.get(item.discussion_id)
        if discussion is None:
            continue
        followers = facts.followers.get(item.discussion_id, [])
        actor_id = item.actor.get("id", "")
        if isinstance(item, CommonGround):
            planned = plan_common_ground(actor_id=actor_id, follower_ids=followers, preferences=recipients.preferences)
        else:
            outcome = plan(
                actor_id=actor_id,
                parent_author_id=None if item.parent_id is None else facts.parent_authors.get(item.parent_id),
                mentioned_user_ids=mentioned(item, discussion, facts),
                follower_ids=followers,
                preferences=recipients.preferences,
            )
            planned = outcome.notifications
            if outcome.activity_updates:
                decision.activity.setdefault(item.discussion_id, set()).update(outcome.activity_updates)
        for one in planned:
            if one.type == "activity":
                if (one.user_id, item.discussion_id) in has_activity:
                    continue
                has_activity.add((one.user_id, item.discussion_id))
            decision.notify.append((item, one))
    return decision


async def should_push(user_id: str, recipients: Recipients, active: ActiveUsers) -> bool:
    """Web Push now? To a user with a subscription who kept `push` on and is not active: no
    connection whose presence is `online` anywhere (every tab hidden or away counts as
    inactive, FR-009; `app.core.active_users`). An active user sees it in the page."""
    return (
        user_id in recipients.subscribed
        and wants(recipients.preferences, user_id, "push")
        and not await active.is_user_active(user_id)
    )


def notification_row(item: Item, planned: Planned, *, push: bool) -> dict[str, Any]:
    """A new `notifications` row (the bulk INSERT sets every column: no model defaults)."""
    return {
        "id": secrets.token_urlsafe(12),
        "user_id": planned.user_id,
        "type": planned.type,
        "priority": planned.priority,
        "source_event": item.cursor,
        "discussion_id": item.discussion_id,
        "response_id": item.response_id if isinstance(item, Posted) else None,
        "actor_id": item.actor.get("id") or None,
        "actor_name": item.actor.get("name"),
        "excerpt": item.excerpt,
        "created_at": utcnow(),
        "read_at": None,
        "delivery_state": "pending",
        "push_state": "pending" if push else "none",
    }
