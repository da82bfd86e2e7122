"""The composition of one running Parley process: what `create_app` builds and owns.

Handlers reach it through `services()`; nothing else holds global state.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from quart import current_app
from sqlalchemy.exc import IntegrityError

from .access import ReadAccessCache
from .auth import Authenticator, Identity
from .db import Database
from .eventlog import EventLog
from .events import Event, envelope_body
from .hub import Hub
from .metrics import Metrics
from .models import User, utcnow
from .presence_tracker import PresenceTracker
from .ratelimit import RateLimiter
from .settings import Settings

log = logging.getLogger(__name__)

KNOWN_USERS_CACHE = 10_000


@dataclass
class Services:
    settings: Settings
    metrics: Metrics
    db: Database
    log: EventLog
    hub: Hub
    auth: Authenticator
    rate_limit: RateLimiter
    presence: PresenceTracker
    read_access: ReadAccessCache = field(default_factory=ReadAccessCache)
    # user id -> name last written, so a request writes the users table only when a name changes.
    _known_users: OrderedDict[str, str] = field(default_factory=OrderedDict)

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

    async def remember_user(self, identity: Identity) -> None:
        """Upsert the caller from the token's claims (users are owned by the token issuer)."""
        if self._known_users.get(identity.user_id) == identity.name:
            self._known_users.move_to_end(identity.user_id)
            return
        async with self.db.session() as session:
            user = await session.get(User, identity.user_id)
            if user is None:
                session.add(User(id=identity.user_id, name=identity.name))
            elif user.name != identity.name:
                user.name = identity.name
                user.updated_at = utcnow()
            try:
                await session.commit()
            except IntegrityError:  # a concurrent request inserted the same user first
                await session.rollback()
        self._known_users[identity.user_id] = identity.name
        if len(self._known_users) > KNOWN_USERS_CACHE:
            self._known_users.popitem(last=False)


def services() -> Services:
    value: Services = current_app.extensions["parley"]
    return value
