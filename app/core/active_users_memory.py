"""Active users of the embedded default (contract: `app.core.active_users`): one process, so
its presence tracker knows every connection and its status."""

from __future__ import annotations

from app.core.active_users import LocalActivity


class LocalActiveUsers:
    def __init__(self, local: LocalActivity) -> None:
        self._local = local

    async def is_user_active(self, user_id: str) -> bool:
        return self._local.is_online_here(user_id)

    async def run(self) -> None:
        return None
