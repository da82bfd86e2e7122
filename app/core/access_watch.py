"""Membership changes reach every process: its read-access cache and its open streams.

A change fires `access_granted` / `access_revoked` on the member's user topic
(app/domain/membership.py). Every process's hub reads every event from the log, so each one
here, through `Hub.watch`:

- forgets the discussion in its `ReadAccessCache` (the next connect or `GET` reads it again;
  everything, for an account deletion: its discussions' `created_by` changed too);
- on `access_revoked`, takes the discussion off each of that user's open streams in this
  process (`Subscription.on_revoke`: the session drops its topic and its presence there).

The hub calls the watchers before it hands the event to the user's streams, and hands events
out in log order: the stream gets every event of the discussion before the revocation, then
the `access_revoked` notice itself (its user topic), and nothing of the discussion after it.
"""

from __future__ import annotations

from app.core.hub import Hub
from app.domain.access import ReadAccessCache
from app.domain.membership import ACCESS_GRANTED, ACCESS_REVOKED
from app.log import topics
from app.log.events import Event


def watch_access(hub: Hub, cache: ReadAccessCache) -> None:
    def granted(event: Event) -> None:
        discussion_id = _discussion_of(event)
        if discussion_id is not None:
            cache.forget(discussion_id)

    def revoked(event: Event) -> None:
        discussion_id = _discussion_of(event)
        if discussion_id is None:
            return
        payload = event.as_dict().get("payload")
        if isinstance(payload, dict) and payload.get("reason") == "account_deleted":
            # The account's discussions now show the deleted user as creator: forget them all,
            # as the process that deleted it did (app/api/account.py).
            cache.clear()
        else:
            cache.forget(discussion_id)
        topic = topics.discussion(discussion_id)
        for subscription in hub.subscriptions_of(event.topic):  # the user's streams here
            if topic in subscription.topics:
                subscription.remove_topic(topic)
                if subscription.on_revoke is not None:
                    subscription.on_revoke(discussion_id)

    hub.watch(ACCESS_GRANTED, granted)
    hub.watch(ACCESS_REVOKED, revoked)


def _discussion_of(event: Event) -> str | None:
    discussion_id = event.as_dict().get("discussion_id")
    return discussion_id if isinstance(discussion_id, str) else None
