"""A cap on how many join/leave/status deliveries one discussion's crowd costs this process
(used by `PresenceTracker`)."""

from __future__ import annotations

import time

ROOM_EVENTS = frozenset({"user_joined", "user_left", "presence_changed"})


class RoomEventBudget:
    """Caps the deliveries of join/leave/status events per discussion from this process.

    Each such event goes to every reader of the discussion, so a crowd arriving at once costs
    readers x arrivals deliveries: 5,000 readers of one discussion reconnecting after a restart
    would be 25 million, and even 10 joins a second there are 50,000 deliveries a second, more
    than a small server has (bench/: herd, scale). So the budget is counted in deliveries (an
    event costs the discussion's readers on this process), `per_s` a second after a `burst`:
    a discussion of 50 readers may announce 100 arrivals a second, one of 5,000 readers one.
    The rest are skipped. Readers' lists may then miss some arrivals: the participant count and
    list are always right in `GET /api/discussions/{id}/presence`, which the page refetches.
    """

    def __init__(self, per_s: float = 5_000.0, burst: float = 15_000.0, max_rooms: int = 10_000) -> None:
        self._per_s = per_s
        self._burst = burst
        self._max_rooms = max_rooms
        self._rooms: dict[str, tuple[float, float]] = {}  # discussion -> (tokens, at monotonic s)

    def take(self, discussion_id: str, readers: int, *, now: float | None = None) -> bool:
        """Whether an event for `readers` readers may go out now (`now`: monotonic s, for tests)."""
        cost = min(max(1, readers), self._burst)  # a room above the burst still gets an event now and then
        now = time.monotonic() if now is None else now
        tokens, at = self._rooms.get(discussion_id, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._per_s)
        if len(self._rooms) >= self._max_rooms and discussion_id not in self._rooms:
            self._rooms.clear()  # bounded: forgetting only refills buckets
        if tokens < cost:
            self._rooms[discussion_id] = (tokens, now)
            return False
        self._rooms[discussion_id] = (tokens - cost, now)
        return True
