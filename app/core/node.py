"""This process's real-time node: the event log, the hub that fans it out, presence, and the
sessions it opens.

A `StreamSession` depends on the node and on nothing else of the process: not the database,
the authenticator or the rate limits (the REST side's, in `Services`, which holds the node).
So a session can be built and driven without Quart (tests/test_session_core.py): a node is a
log, a presence store and the stream settings.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from app.auth import Identity
from app.core.hub import Hub
from app.core.presence_tracker import PresenceTracker
from app.core.publication import Publication
from app.core.session import TICKS_PER_HEARTBEAT, StreamSession
from app.core.stream_slots import StreamSlots
from app.infra.metrics import Metrics
from app.log.eventlog import Append, EventLog
from app.log.events import Event, envelope_body
from app.presence.store import PresenceStore
from app.settings import Settings


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """What a session's deadlines and buffers are made of."""

    heartbeat_s: float = 30.0
    max_buffered_events: int = 1024
    max_catchup_events: int = 1000
    max_streams_per_user: int = 20
    presence_sweep_s: float = 1.0

    @classmethod
    def of(cls, settings: Settings) -> StreamSettings:
        return cls(
            heartbeat_s=settings.heartbeat_s,
            max_buffered_events=settings.max_buffered_events,
            max_catchup_events=settings.max_catchup_events,
            max_streams_per_user=settings.max_streams_per_user,
            presence_sweep_s=settings.presence_sweep_s,
        )


class Node:
    """Owns the hub and the presence tracker (their `run()` are the composition root's tasks)."""

    def __init__(
        self, event_log: EventLog, presence_store: PresenceStore, metrics: Metrics, settings: StreamSettings
    ) -> None:
        self.event_log = event_log
        self.metrics = metrics
        self.settings = settings
        self.hub = Hub(event_log, metrics)
        self.presence = PresenceTracker(presence_store, self.hub, sweep_interval_s=settings.presence_sweep_s)
        self.presence.attach(self.publish_many)
        self.stream_slots = StreamSlots(settings.max_streams_per_user)
        # Read access asked again once a session has subscribed (set by the composition root:
        # `Services.may_read`). A membership removal handled by this process between the
        # transport's check and the subscription would otherwise leave the discussion on the
        # stream: its `access_revoked` reached the hub before the subscription existed.
        self.recheck_access: Callable[[Identity, str], Awaitable[bool]] | None = None

    @property
    def heartbeat_s(self) -> float:
        return self.settings.heartbeat_s

    @property
    def tick_s(self) -> float:
        """How often a process-wide timer must call `StreamSession.tick()` (the lean path's)."""
        return self.settings.heartbeat_s / TICKS_PER_HEARTBEAT

    def open_session(
        self, identity: Identity, discussion_ids: Iterable[str], *, access_checked: bool = False
    ) -> StreamSession:
        """A session for `identity` (read access is the caller's to check; `access_checked`:
        checked, so ask again once subscribed, `recheck_access`). Takes one of the user's
        stream slots (`TooManyStreams`, 429, past the cap); `open()` it, `close()` it."""
        return StreamSession(self, identity, discussion_ids, access_checked=access_checked)

    async def publish(
        self,
        topic: str,
        event_type: str,
        *,
        discussion_id: str | None,
        user: dict[str, str] | None,
        payload: dict[str, Any],
        durable: bool = True,
    ) -> Event:
        body = envelope_body(event_type, discussion_id=discussion_id, user=user, payload=payload)
        event = await self.event_log.append(topic, event_type, body, durable=durable)
        self.metrics.published.labels(type=event_type).inc()
        return event

    async def publish_many(self, publications: Sequence[Publication]) -> list[Event]:
        """`publish` for a batch, appended in one go (`EventLog.append_many`: each topic's in
        the order given). Counted once appended, like `publish`; nothing is counted if it fails."""
        if not publications:
            return []
        events = await self.event_log.append_many(
            [
                Append(
                    p.topic,
                    p.event_type,
                    envelope_body(p.event_type, discussion_id=p.discussion_id, user=p.user, payload=p.payload),
                    durable=p.durable,
                )
                for p in publications
            ]
        )
        for event_type, count in Counter(p.event_type for p in publications).items():
            self.metrics.published.labels(type=event_type).inc(count)
        return events
