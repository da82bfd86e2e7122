"""Cursors: where a client stands in the event log, as one opaque string.

Design (why one cursor resumes every topic of a connection): a stream connection carries
several topics (its discussions, the user's own topic, broadcasts), and `Last-Event-ID` is a
single value. Rather than encode a position per topic (which would make every event's `id:`
depend on the connection, so an event could no longer be encoded once for all its readers),
Parley gives every event one position in a *single, global order*: the log assigns positions
from one monotonic sequence shared by all topics (in Redis, the ID that `XADD` gives the
firehose stream, reused as the explicit ID in the topic's own stream). A cursor therefore
means "everything on my topics after this point", whatever the topics are; catch-up reads each
topic's stream after it and merges by position.

A position is Redis's stream-ID shape, `<ms>-<seq>`, which always increases even when the
clock steps back. The cursor prefixes it with the log's *epoch*: a random tag the log picks
when it is created (in Redis, kept under one key). A cursor from another epoch (the embedded
log of a process that has restarted, or a Redis that was flushed) is never "recovered" into
the wrong stream: it is an explicit `sync_required`.

In Redis the epoch is stored with its creation time, "<tag>.<created ms>", under one key that
has no TTL. A Redis that loses its data loses the key with the streams; the first append or
read after that mints a new one inside a Lua script (so exactly one process does), and every
process adopts it: the append script refuses a caller whose epoch is not the key's, and each
read that accepts a cursor checks the key in the same round trip. So positions of the new log
can never be mistaken for continuations of the old one, and all servers, including ones
started later, agree on the new epoch (see `app.log.eventlog_redis`).

Sharded (several log shards, e.g. on a Redis Cluster; docs/SCALING.md "One order across
shards"): the order stays single and global and the wire form unchanged, rather than a vector
of per-shard positions (which would make every event's `id:` depend on the connection again).
A shard's positions have a sequence number congruent to its index modulo the shard count, so
no two shards give the same position; appends carry the newest position their process has
seen (a Lamport clock); a reader releases an event only once every shard has shown a position
at or after it, and catch-up reads stop at the least of the shards' newest positions. The
epoch is then a digest of every shard's epoch tag.

Wire form: `<epoch>.<ms>-<seq>`, e.g. `k3xq9a.1764100000000-3`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

_CURSOR_RE = re.compile(r"^([A-Za-z0-9_]{1,32})\.(\d{1,15})-(\d{1,15})$")
_POSITION_RE = re.compile(r"^(\d{1,15})-(\d{1,15})$")


class InvalidCursor(ValueError):
    """The text is not a cursor at all (garbage `Last-Event-ID`)."""


class Position(NamedTuple):
    """A point in the global event order; compares as (ms, seq)."""

    ms: int
    seq: int

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"

    @classmethod
    def parse(cls, text: str | bytes) -> Position:
        if isinstance(text, bytes):
            text = text.decode()
        match = _POSITION_RE.match(text)
        if match is None:
            raise InvalidCursor(f"not a log position: {text!r}")
        return cls(int(match.group(1)), int(match.group(2)))


ORIGIN = Position(0, 0)


@dataclass(frozen=True, slots=True)
class Cursor:
    epoch: str
    position: Position

    def __str__(self) -> str:
        return f"{self.epoch}.{self.position}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        match = _CURSOR_RE.match(text.strip())
        if match is None:
            raise InvalidCursor(f"not a Parley cursor: {text[:80]!r}")
        return cls(match.group(1), Position(int(match.group(2)), int(match.group(3))))
