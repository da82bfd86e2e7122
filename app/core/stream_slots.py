"""A cap on one user's open streams in this process (SSE, WebSocket and long-poll alike).

Without it one account could hold thousands of connections (issue 11: 2,000 accepted), each
with its buffers, presence entry and fan-out cost. The cap is per process on purpose: what it
protects is this process's memory, it needs no round trip on the connect path (a reconnect
storm stays cheap), and a crashed server leaves no count behind to leak. With N processes a
user may hold up to N x the cap.

A slot is taken before a stream is answered (so the refusal is a plain 429) and given back
when its session closes, or when the session is garbage-collected if a transport never got
to close it (a Quart response body that never started runs no `finally`).
"""

from __future__ import annotations

import weakref

from app.errors import RateLimited

# Retry-After for a refused stream: a slot frees when another of the user's streams closes.
RETRY_AFTER_S = 10


class TooManyStreams(RateLimited):
    code = "too_many_streams"


class StreamSlot:
    __slots__ = ("_slots", "_user_id")

    def __init__(self, slots: StreamSlots, user_id: str) -> None:
        self._slots: StreamSlots | None = slots
        self._user_id = user_id

    def release(self) -> None:
        """Give the slot back; safe to call more than once."""
        slots, self._slots = self._slots, None
        if slots is not None:
            slots._release(self._user_id)


class StreamSlots:
    def __init__(self, max_per_user: int) -> None:
        self.max_per_user = max_per_user  # 0: no cap
        self._open: dict[str, int] = {}

    def open_count(self, user_id: str) -> int:
        return self._open.get(user_id, 0)

    def acquire(self, user_id: str, owner: object) -> StreamSlot:
        """A slot for one more stream of `user_id`, released when `owner` is collected at the
        latest; raises `TooManyStreams` (429) at the cap."""
        count = self._open.get(user_id, 0)
        if self.max_per_user and count >= self.max_per_user:
            raise TooManyStreams(
                f"at most {self.max_per_user} open streams per user; close one first", retry_after_s=RETRY_AFTER_S
            )
        self._open[user_id] = count + 1
        slot = StreamSlot(self, user_id)
        weakref.finalize(owner, slot.release)
        return slot

    def _release(self, user_id: str) -> None:
        count = self._open.get(user_id, 0) - 1
        if count > 0:
            self._open[user_id] = count
        else:
            self._open.pop(user_id, None)
