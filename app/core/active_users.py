"""Is a user active anywhere right now? Decides in-app only versus Web Push too (FR-009).

A user is active while they hold at least one stream connection (any transport, any process)
whose presence status is `online`. A user whose every connection is `away` (every tab hidden,
on every device) is inactive, so a notification reaches them as a push as well as in-app.
Each process knows its own connections' statuses (`LocalActivity`, the presence tracker);
`ActiveUsers` is the tiny contract the notification worker needs; two backends, built by
`app.core.backends.Backends.active_users`:

- `LocalActiveUsers` (`active_users_memory`): the embedded default, one process: ask the tracker.
- `RedisActiveUsers` (`active_users_redis`): every process publishes the users active on it in
  Redis and asks every live process's set.

A WebSocket carries its own connection's status. `PUT /api/presence` (SSE and long-poll pages)
sets the statuses of the caller's connections on the process that answers it; connections on
other processes keep theirs until their own next signal (PresenceTracker.set_user_status).

The contract is tests/test_active_users.py, run against both.
"""

from __future__ import annotations

from typing import Protocol


class LocalActivity(Protocol):
    """This process's connections (app/core/presence_tracker.py: `PresenceTracker`)."""

    def online_users(self) -> set[str]: ...

    def is_online_here(self, user_id: str) -> bool: ...


class ActiveUsers(Protocol):
    async def is_user_active(self, user_id: str) -> bool: ...

    async def run(self) -> None:
        """Keep what other processes see up to date until cancelled (owned by the app)."""
