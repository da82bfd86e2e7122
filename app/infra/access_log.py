"""The access log: one structured line per HTTP request, on by default in production
(`PARLEY_ACCESS_LOG`, default: on unless development login is).

Each line holds the method, the route *template* (`/api/discussions/<discussion_id>/responses`,
never the raw path: no query string, so no token passed as `?access_token=`, and a bounded set
of values to aggregate on), the status, the duration in milliseconds and the caller's user id
when the request was authenticated. Hypercorn's own access log stays off (it prints raw request
lines). For a streaming response the duration is the time to its headers. `GET /stream` served
by the lean front (app/transports/lean_http.py) does not pass through Quart and is not logged
here; it is counted by `parley_connections`.

The line is made and handed to the logger's handlers directly (`makeRecord` + `handle`), not
through `Logger.info`: that walks the stack for the caller's file and line (`findCaller`),
which the JSON lines do not show, and was a fifth of the access log's cost on a
`GET /api/discussions/{id}` (issue 13). Filters and handlers see the same record as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from quart import Response, g, request

log = logging.getLogger("parley.access")

# Probes and scrapes come every few seconds and say nothing while they succeed: logged only
# when they fail.
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


def hooks() -> tuple[Callable[[], Awaitable[None]], Callable[[Response], Awaitable[Response]]]:
    """What to run before every request and after every response (`app.web.request_hooks`)."""
    # Its own level: the access log follows its flag, not PARLEY_LOG_LEVEL (WARNING in tests).
    log.setLevel(logging.INFO)

    async def started() -> None:
        g.access_started = time.perf_counter()

    async def finished(response: Response) -> Response:
        started_at = g.get("access_started")
        duration_ms = None if started_at is None else round((time.perf_counter() - started_at) * 1000, 1)
        status = response.status_code
        rule = request.url_rule
        route = rule.rule if rule is not None else "(unmatched)"
        if status < 400 and route in QUIET_ROUTES:
            return response
        if not log.isEnabledFor(logging.INFO):
            return response
        identity = g.get("identity")
        method = request.method
        fields = {
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": duration_ms,
            "user_id": getattr(identity, "user_id", None),
        }
        record = log.makeRecord(
            log.name, logging.INFO, __file__, 0, "%s %s %s", (method, route, status), None, extra={"fields": fields}
        )
        log.handle(record)
        return response

    return started, finished
