"""The composition of one running Parley process: what `create_app` builds and owns.

Handlers reach it through `services()`; nothing else holds global state. The real-time half
(event log, hub, presence, sessions) is the `Node`; this container adds what the REST side
needs besides (the database, the authenticator, rate limits, the users, the read-access cache).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from quart import current_app

from app.auth import Authenticator, Identity
from app.core.hub import Hub
from app.core.node import Node
from app.core.presence_tracker import PresenceTracker
from app.core.publication import Publication
from app.core.stream_slots import StreamSlots
from app.domain.access import ReadAccessCache
from app.domain.users import UserDirectory
from app.errors import NotFound
from app.infra.db import Database
from app.infra.metrics import Metrics
from app.infra.ratelimit import Limits
from app.log.eventlog import EventLog
from app.log.events import Event
from app.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    metrics: Metrics
    db: Database
    node: Node
    auth: Authenticator
    # Per-user limits: `await services().rate_limit.hit(user_id, action)` (429 past them).
    rate_limit: Limits
    users: UserDirectory
    read_access: ReadAccessCache = field(default_factory=ReadAccessCache)

    @property
    def log(self) -> EventLog:
        """The event log (`Node.event_log`)."""
        return self.node.event_log

    @property
    def hub(self) -> Hub:
        return self.node.hub

    @property
    def presence(self) -> PresenceTracker:
        return self.node.presence

    @property
    def stream_slots(self) -> StreamSlots:
        return self.node.stream_slots

    async def may_read(self, identity: Identity, discussion_id: str) -> bool:
        """Whether `identity` may read the discussion now (the read-access cache; NotFound: no)."""
        try:
            await self.read_access.check(self.db, identity, discussion_id)
        except NotFound:
            return False
        return True

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
        """Build the envelope, append it, count it (`Node.publish`)."""
        return await self.node.publish(
            topic, event_type, discussion_id=discussion_id, user=user, payload=payload, durable=durable
        )

    async def publish_many(self, publications: Sequence[Publication]) -> list[Event]:
        """A batch of `publish`, appended in one go (`Node.publish_many`)."""
        return await self.node.publish_many(publications)


def services() -> Services:
    value: Services = current_app.extensions["parley"]
    return value
