"""Operations: liveness, readiness, metrics (API.md, Operations)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from pydantic import Field
from quart import Blueprint, Response

from app.core.services import services
from app.web.contract import documented
from app.web.wire import Shape

blueprint = Blueprint("ops", __name__)
log = logging.getLogger(__name__)

# A probe that hangs (a half-open connection) counts as a failure after this.
PROBE_TIMEOUT_S = 2.0


class Health(Shape):
    status: Literal["ok"]


class Readiness(Shape):
    status: Literal["ready", "unavailable"]
    checks: dict[str, Literal["ok", "unreachable"]] = Field(description="`database`, `event_log`")


@blueprint.get("/healthz")
@documented("Alive", response=Health, auth=False)
async def healthz() -> dict[str, Any]:
    return {"status": "ok"}


async def _checks() -> dict[str, str]:
    parley = services()
    checks: dict[str, str] = {}
    for name, probe in (("database", parley.db.ping), ("event_log", parley.log.ping)):
        try:
            await asyncio.wait_for(probe(), PROBE_TIMEOUT_S)
            checks[name] = "ok"
        except Exception as error:  # any failure means "not ready", whatever its type
            log.warning("readiness: %s unreachable: %s", name, error)
            checks[name] = "unreachable"
        parley.metrics.backend_up.labels(backend=name).set(1 if checks[name] == "ok" else 0)
    return checks


@blueprint.get("/readyz")
@documented(
    "Ready: the database and the event log are reachable",
    response=Readiness,
    also={503: Readiness},
    auth=False,
)
async def readyz() -> tuple[dict[str, Any], int]:
    checks = await _checks()
    ready = all(value == "ok" for value in checks.values())
    return {"status": "ready" if ready else "unavailable", "checks": checks}, 200 if ready else 503


@blueprint.get("/metrics")
@documented(
    "Prometheus metrics",
    description="Connections by transport, events published and delivered, delivery latency, "
    "dropped slow consumers, push attempts.",
    media_type="text/plain",
    auth=False,
)
async def metrics() -> Response:
    # Readiness as a metric (the uptime SC): what a scrape sees, not only what a probe saw.
    await _checks()
    return Response(services().metrics.render(), content_type="text/plain; version=0.0.4; charset=utf-8")
