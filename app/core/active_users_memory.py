"""Active users of the embedded default (contract: `app.core.active_users`): one process, so
its hub knows every connection."""

from __future__ import annotations

from app.core.hub import Hub
from app.log import topics


class LocalActiveUsers:
    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    async def is_user_active(self, user_id: str) -> bool:
        return self._hub.has_subscribers(topics.user(user_id))

    async def run(self) -> None:
        return None
