"""Operations: liveness, readiness, metrics (API.md, Operations)."""

from __future__ import annotations

import logging
from typing import Any

from quart import Blueprint, Response

from ..services import services

blueprint = Blueprint("ops", __name__)
log = logging.getLogger(__name__)


@blueprint.get("/healthz")
async def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@blueprint.get("/readyz")
async def readyz() -> tuple[dict[str, Any], int]:
    parley = services()
    checks: dict[str, str] = {}
    for name, probe in (("database", parley.db.ping), ("event_log", parley.log.ping)):
        try:
            await probe()
            checks[name] = "ok"
        except Exception as error:  # any failure means "not ready", whatever its type
            log.warning("readiness: %s unreachable: %s", name, error)
            checks[name] = "unreachable"
    ready = all(value == "ok" for value in checks.values())
    return {"status": "ready" if ready else "unavailable", "checks": checks}, 200 if ready else 503


@blueprint.get("/metrics")
async def metrics() -> Response:
    return Response(services().metrics.render(), content_type="text/plain; version=0.0.4; charset=utf-8")
