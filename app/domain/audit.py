"""The audit log: who edited or deleted which response, who changed membership, who
broadcast. Each record is a row of `audit_log` (kept; queried by operators with SQL) and a
structured log line (`"logger": "parley.audit"`), whatever PARLEY_LOG_LEVEL says.

Called after the change it records has committed: a record of something that did not happen
would mislead a moderator. If the row cannot be written, the change stands (it is committed;
failing the request would make the client retry it) and the log line says so, with every field.
"""

from __future__ import annotations

import logging
from typing import Any

from app.domain.models import AuditEntry
from app.infra.db import Database

log = logging.getLogger("parley.audit")
log.setLevel(logging.INFO)


async def record(db: Database, actor: str, action: str, target: str, details: dict[str, Any] | None = None) -> None:
    """Record that `actor` (a user id) did `action` (`response.edit`, `response.delete`,
    `membership.add`, `broadcast.send`, ...) to `target` (`response:123`, `discussion:ab12`)."""
    fields = {"actor_id": actor, "action": action, "target": target, "details": details or {}}
    try:
        async with db.session() as session:
            session.add(AuditEntry(actor_id=actor, action=action, target=target, details=details))
            await session.commit()
    except Exception:  # the change stands; the line below still records it
        log.exception("audit: could not store %s by %s on %s", action, actor, target, extra={"fields": fields})
        return
    log.info("audit: %s by %s on %s", action, actor, target, extra={"fields": fields})
