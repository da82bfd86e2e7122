"""Leases, the contract; two backends each: `lease_memory` (embedded) and `lease_redis`.

- `Lease`: a cluster-wide worker lease with a checkpoint. One holder at a time processes a
  stream of work, and whoever holds it next resumes from the last checkpoint the holders saved
  (the notification and analysis workers' journal readers).
- `KeyedLease`: short leases on many keys (one per discussion), at most one holder per key
  (the analysis worker's per-discussion runs).

Both are built by `app.core.backends.Backends` (`lease`, `keyed_lease`); the contract is
tests/test_lease.py, run against both backends.
"""

from __future__ import annotations

from typing import Protocol


class Lease(Protocol):
    async def hold(self) -> bool:
        """Acquire or renew; True while this process is the holder."""

    async def release(self) -> None: ...

    async def checkpoint(self) -> str | None: ...

    async def initialise(self, cursor: str) -> None:
        """Set the checkpoint if there is none yet (first start of a cluster)."""

    async def save(self, cursor: str) -> bool:
        """Store the checkpoint; False if the lease was lost (the save is then refused)."""

    async def close(self) -> None: ...


class KeyedLease(Protocol):
    """Short leases on many keys (one per discussion): at most one holder per key at a time,
    cluster-wide. `acquire` also renews a key this holder already has."""

    async def acquire(self, key: str) -> bool: ...

    async def still_held(self, key: str) -> bool:
        """Renew `key` if this holder still has it; False if it expired (even if now free)."""

    async def release(self, key: str) -> None: ...

    async def close(self) -> None: ...
