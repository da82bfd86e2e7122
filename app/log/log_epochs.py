"""The epochs of a sharded Redis log, and the one epoch tag its cursors carry.

Each log shard keeps its own epoch key ("<tag>.<created ms>", in the shard's hash slot), minted
by the first script that finds it missing: a shard that loses its data (a Redis restarted
without persistence, a flushed cluster node) gets a new one, exactly as one Redis does
(docs/ARCHITECTURE.md, "When Redis loses its data"). A cursor carries one tag for the whole log:
with one shard, that shard's tag (as before sharding); with several, a digest of every shard's
tag. So a loss on any shard changes the log's epoch and every older cursor becomes
`sync_required`: coarser than needed for a client whose topics are all elsewhere, but one
`Last-Event-ID` keeps meaning one thing.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

log = logging.getLogger(__name__)


def log_epoch(tags: Sequence[str]) -> str:
    """The log's epoch tag from its shards' tags, in shard order."""
    if len(tags) == 1:
        return tags[0]
    return hashlib.blake2b("|".join(tags).encode(), digest_size=8).hexdigest()


def tag_of(value: str) -> str:
    return value.partition(".")[0]


class LogEpochs:
    """What this process believes each shard's epoch to be (as stored: "<tag>.<created ms>")."""

    def __init__(self, shards: int) -> None:
        self.values = [""] * shards

    def adopt(self, shard: int, value: bytes | str) -> None:
        text = value.decode() if isinstance(value, bytes) else value
        if text != self.values[shard]:
            if self.values[shard]:
                log.warning(
                    "event log epoch of shard %d changed (%s -> %s): it lost its data", shard, self.values[shard], text
                )
            self.values[shard] = text

    @property
    def epoch(self) -> str:
        return log_epoch([tag_of(value) for value in self.values])

    def epoch_with(self, shard: int, value: str) -> str:
        """The log's epoch had `shard`'s epoch been `value` (what an append was checked against)."""
        values = list(self.values)
        values[shard] = value
        return log_epoch([tag_of(v) for v in values])

    @property
    def created_ms(self) -> int:
        """When the oldest of the shards' epochs began (what the origin cursor stands for; the
        oldest, so that a doubt about trimmed events is a `sync_required`, never a gap)."""
        return min((int(value.partition(".")[2] or 0) for value in self.values), default=0)
