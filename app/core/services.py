"""The composition of one running Parley process: what `create_app` builds and owns.

Handlers reach it through `services()`; nothing else holds global state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from quart import current_app

from app.auth import Authenticator
from app.core.hub import Hub
from app.core.presence_tracker import PresenceTracker
from app.core.stream_slots import StreamSlots
from app.domain.access import ReadAccessCache
from app.domain.users import UserDirectory
from app.infra.db import Database
from app.infra.metrics import Metrics
from app.infra.ratelimit import Limits
from app.log.eventlog import EventLog
from app.log.events import Event, envelope_body
from app.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    metrics: Metrics
    db: Database
    log: EventLog
    hub: Hub
    auth: Authenticator
    # Per-user limits: `await services().rate_limit.hit(user_id, action)` (429 past them).
    rate_limit: Limits
    presence: PresenceTracker
    users: UserDirectory
    stream_slots: StreamSlots
    read_access: ReadAccessCache = field(default_factory=ReadAccessCache)

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
        event = await self.log.append(topic, event_type, body, durable=durable)
        self.metrics.published.labels(type=event_type).inc()
        return event


def services() -> Services:
    value: Services = current_app.extensions["parley"]
    return value
