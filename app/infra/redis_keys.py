"""Every Redis key Parley uses, built in one place from one prefix.

Redis Cluster (docs/SCALING.md): a script may only touch keys of one hash slot. The event log
is split into `PARLEY_LOG_SHARDS` shards (`LogShardKeys`); each shard's keys (its firehose,
journal, epoch, the streams of the topics hashed to it, their dedupe keys) share one hash tag,
`{<prefix>:log<n>}`, so `append.lua` touches one slot, and different shards land on different
slots, hence (with enough of them) on different masters. One shard on one Redis keeps the
untagged names of before (`<prefix>:firehose`, ...), so an upgrade keeps its epoch and cursors.
The other keys are for the single Redis at `REDIS_URL` (presence.lua and lease_save.lua touch
keys of several slots).
"""

from __future__ import annotations

import zlib


def shard_of(topic: str, shards: int) -> int:
    """The log shard a topic lives in: a stable hash (the same in every process and release)."""
    return 0 if shards == 1 else zlib.crc32(topic.encode()) % shards


class LogShardKeys:
    """The keys of one event-log shard; all in one hash slot when `base` is a hash tag."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.epoch = f"{base}:epoch"
        self.firehose = f"{base}:firehose"
        self.journal = f"{base}:journal"
        # The firehose's newest ID (several shards: append.lua and tick.lua pick the next from it).
        self.last = f"{base}:last"

    def topic(self, topic: str) -> str:
        return f"{self.base}:topic:{topic}"

    def dedupe(self, key: str) -> str:
        return f"{self.base}:dedupe:{key}"


class RedisKeys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def log_shards(self, count: int, *, cluster: bool = False) -> list[LogShardKeys]:
        """The keys of each of `count` log shards: hash-tagged per shard unless there is only
        one shard on one Redis (then the untagged names below, as before sharding)."""
        if count == 1 and not cluster:
            return [LogShardKeys(self.prefix)]
        return [LogShardKeys(f"{{{self.prefix}:log{index}}}") for index in range(count)]

    @property
    def epoch(self) -> str:
        """The log's epoch tag; never expires (a flushed Redis gets a new one)."""
        return f"{self.prefix}:epoch"

    @property
    def firehose(self) -> str:
        """Every event in global order, kept a short window: what each process's reader tails."""
        return f"{self.prefix}:firehose"

    def topic(self, topic: str) -> str:
        """One topic's durable events, trimmed to the retention window and expiring when idle."""
        return f"{self.prefix}:topic:{topic}"

    def rate(self, key: str) -> str:
        """One rate limit's state (`<action>:<user id>`, a GCRA time); expires when spent."""
        return f"{self.prefix}:rate:{key}"

    def dedupe(self, key: str) -> str:
        """The position an outbox entry was appended at, so it is appended once; expires after
        the retention window."""
        return f"{self.prefix}:dedupe:{key}"

    @property
    def journal(self) -> str:
        """Every durable event of every topic, trimmed to the retention window: what background
        workers (the notification worker) read after their checkpoint."""
        return f"{self.prefix}:journal"

    def lease(self, name: str) -> str:
        """Who holds a cluster-wide worker lease (`name`); expires unless renewed."""
        return f"{self.prefix}:lease:{name}"

    def checkpoint(self, name: str) -> str:
        """A worker's last processed log position; expires after the retention window."""
        return f"{self.prefix}:checkpoint:{name}"

    def active_users(self, process_id: str) -> str:
        """The users active on one process (a set: an online stream connection there); expires unless refreshed."""
        return f"{self.prefix}:active:{process_id}"

    @property
    def active_processes(self) -> str:
        """Processes with an `active_users` set, scored by when it expires (ms)."""
        return f"{self.prefix}:active-processes"

    # Presence and typing (app/lua/presence.lua): per discussion, every key PEXPIREd past its
    # newest entry, so a discussion nobody touches leaves nothing behind.
    def presence(self, discussion_id: str) -> list[str]:
        """The six keys of one discussion's presence, in presence.lua's KEYS order (the last,
        `presence_due`, is shared by every discussion)."""
        base = f"{self.prefix}:presence:{discussion_id}"
        discussion = [f"{base}:conn-info", f"{base}:users", f"{base}:typing", f"{base}:typing-info"]
        return [self.presence_conns(discussion_id), *discussion, self.presence_due]

    def presence_conns(self, discussion_id: str) -> str:
        """One discussion's connections zset; also its name in `presence_due`."""
        return f"{self.prefix}:presence:{discussion_id}:conns"

    @property
    def presence_due(self) -> str:
        """When each discussion's presence next needs a sweep (a zset: its `conns` key -> ms),
        so a sweep looks only at discussions with something due; expiring."""
        return f"{self.prefix}:presence-due"

    def presence_user(self, user_id: str) -> str:
        """The discussions a user has connections in (for a per-user status change); expiring."""
        return f"{self.prefix}:presence-user:{user_id}"

    def presence_active(self, user_id: str) -> str:
        """When the user last did something (ms), for the idle timeout; expires after it."""
        return f"{self.prefix}:presence-active:{user_id}"
