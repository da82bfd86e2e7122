"""Every Redis key Parley uses, built in one place from one prefix.

Cluster note: the append script touches the firehose and one topic stream; on Redis Cluster
they would need one hash slot (wrap the prefix in `{…}`). Parley targets a single primary.
"""

from __future__ import annotations


class RedisKeys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

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
        """The five keys of one discussion's presence, in presence.lua's KEYS order."""
        base = f"{self.prefix}:presence:{discussion_id}"
        return [f"{base}:conns", f"{base}:conn-info", f"{base}:users", f"{base}:typing", f"{base}:typing-info"]

    def presence_user(self, user_id: str) -> str:
        """The discussions a user has connections in (for a per-user status change); expiring."""
        return f"{self.prefix}:presence-user:{user_id}"

    def presence_active(self, user_id: str) -> str:
        """When the user last did something (ms), for the idle timeout; expires after it."""
        return f"{self.prefix}:presence-active:{user_id}"
