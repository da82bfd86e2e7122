"""The embedded leases (contract: `app.infra.lease`): one process, so it always holds."""

from __future__ import annotations


class MemoryLease:
    """Always held; the checkpoint lives as long as the embedded log it points into."""

    def __init__(self) -> None:
        self._checkpoint: str | None = None

    async def hold(self) -> bool:
        return True

    async def release(self) -> None:
        return None

    async def checkpoint(self) -> str | None:
        return self._checkpoint

    async def initialise(self, cursor: str) -> None:
        if self._checkpoint is None:
            self._checkpoint = cursor

    async def save(self, cursor: str) -> bool:
        self._checkpoint = cursor
        return True

    async def close(self) -> None:
        return None


class MemoryKeyedLease:
    """One process, so a set of the keys held is the whole truth."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    async def acquire(self, key: str) -> bool:
        self._held.add(key)
        return True

    async def still_held(self, key: str) -> bool:
        return key in self._held

    async def release(self, key: str) -> None:
        self._held.discard(key)

    async def close(self) -> None:
        self._held.clear()
