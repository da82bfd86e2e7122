"""What the presence tracker knows of a stream session: the `PresenceSession` it reads and
tells, and `OnlineCount`, who among this process's connections is online (FR-009).

Apart from the tracker (app/core/presence_tracker.py) so each stays one concept: the count is
kept in step with every status change, which goes through `OnlineCount.set_status`.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from app.auth import Identity
from app.presence.store import Status


class PresenceSession(Protocol):
    """What the tracker reads from, and tells, a `StreamSession`."""

    @property
    def identity(self) -> Identity: ...

    @property
    def discussion_ids(self) -> list[str]: ...

    @property
    def status(self) -> Status: ...

    def apply_status(self, status: Status) -> None: ...

    def went_idle(self) -> None: ...


class OnlineCount:
    """User -> how many of this process's connections of theirs are online. A user whose
    every connection is away (every tab hidden) is not counted (app/core/active_users.py)."""

    __slots__ = ("_online",)

    def __init__(self) -> None:
        self._online: Counter[str] = Counter()

    def users(self) -> set[str]:
        return set(self._online)

    def __contains__(self, user_id: str) -> bool:
        return user_id in self._online

    def add(self, session: PresenceSession) -> None:
        self._count(session, +1)

    def remove(self, session: PresenceSession) -> None:
        self._count(session, -1)

    def set_status(self, session: PresenceSession, status: Status) -> None:
        """Every change of a registered session's status goes through here."""
        self._count(session, -1)
        session.apply_status(status)
        self._count(session, +1)

    def _count(self, session: PresenceSession, delta: int) -> None:
        if session.status != "online":
            return
        user_id = session.identity.user_id
        self._online[user_id] += delta
        if self._online[user_id] <= 0:
            del self._online[user_id]
