"""Is a user connected anywhere right now? Decides in-app only versus Web Push (FR-009).

"Active" means "holds at least one stream connection" (any transport), which is what the hub
of each process knows for its own connections. `ActiveUsers` is the tiny contract the
notification worker needs; two backends, built by `app.core.backends.Backends.active_users`:

- `LocalActiveUsers` (`active_users_memory`): the embedded default, one process: ask the hub.
- `RedisActiveUsers` (`active_users_redis`): every process publishes the users connected to
  it in Redis and asks every live process's set.

The contract is tests/test_active_users.py, run against both.
"""

from __future__ import annotations

from typing import Protocol


class ActiveUsers(Protocol):
    async def is_user_active(self, user_id: str) -> bool: ...

    async def run(self) -> None:
        """Keep what other processes see up to date until cancelled (owned by the app)."""
