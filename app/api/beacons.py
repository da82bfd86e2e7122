"""Client beacons (issue 16, item 2): what only the page can see, as Prometheus metrics.

`POST /api/beacons {"beacons": [...]}`: a batch of at most `MAX_BEACONS` entries, each one of a
fixed set of kinds with bounded numbers (`static/beacons.js` sends them with
`navigator.sendBeacon`, batched). Every entry becomes a counter or histogram observation in
`app/infra/metrics.py`; nothing is stored and no label value comes from the client's text, so a
scrape's size cannot grow with what clients send. A batch is all or nothing: one bad entry
refuses it (422, before any metric moves). Limited per user (`PARLEY_BEACON_LIMIT_PER_MIN`).

- `page_open`: a page started (the denominator of the manual-reload rate, SC-008).
- `first_event {"seconds"}`: from the page's start to its first live event.
- `reconnected {"seconds", "attempts"}`: the connection was lost and is back (SC-007).
- `reconnect_failed {"attempts"}`: the page gave up and offered Refresh.
- `manual_reload`: the page was reloaded by hand after losing its connection (SC-008).
- `push_permission {"outcome"}`: `asked`, `granted` or `denied` (SC-005).
- `push_click`: a push notification was clicked (SC-006; sent by the service worker).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, Response

from app.core.services import services
from app.errors import RateLimited
from app.infra.metrics import Metrics
from app.web.contract import documented
from app.web.requests import caller, json_body

blueprint = Blueprint("beacons", __name__)

MAX_BEACONS = 50
# Longer than anyone waits with a page open; a larger figure is a broken clock, not a wait.
MAX_SECONDS = 3600.0
MAX_ATTEMPTS = 1000
SC007_RECONNECT_S = 5.0

Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False)]
Attempts = Annotated[int, Field(ge=0, le=MAX_ATTEMPTS)]


class _Beacon(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class PageOpen(_Beacon):
    kind: Literal["page_open"]


class FirstEvent(_Beacon):
    kind: Literal["first_event"]
    seconds: Seconds


class Reconnected(_Beacon):
    kind: Literal["reconnected"]
    seconds: Seconds
    attempts: Attempts


class ReconnectFailed(_Beacon):
    kind: Literal["reconnect_failed"]
    attempts: Attempts


class ManualReload(_Beacon):
    kind: Literal["manual_reload"]


class PushPermission(_Beacon):
    kind: Literal["push_permission"]
    outcome: Literal["asked", "granted", "denied"]


class PushClick(_Beacon):
    kind: Literal["push_click"]


Beacon = Annotated[
    PageOpen | FirstEvent | Reconnected | ReconnectFailed | ManualReload | PushPermission | PushClick,
    Field(discriminator="kind"),
]


class BeaconBatch(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    beacons: list[Beacon] = Field(min_length=1, max_length=MAX_BEACONS)


def record(metrics: Metrics, beacon: Beacon) -> None:
    match beacon:
        case PageOpen():
            metrics.client_page_loads.inc()
        case FirstEvent(seconds=seconds):
            metrics.client_first_event_seconds.observe(seconds)
        case Reconnected(seconds=seconds, attempts=attempts):
            metrics.client_reconnects.labels(within_5s="yes" if seconds <= SC007_RECONNECT_S else "no").inc()
            metrics.client_reconnect_seconds.observe(seconds)
            metrics.client_reconnect_attempts.inc(attempts)
        case ReconnectFailed(attempts=attempts):
            metrics.client_reconnect_failures.inc()
            metrics.client_reconnect_attempts.inc(attempts)
        case ManualReload():
            metrics.client_manual_reloads.inc()
        case PushPermission(outcome=outcome):
            metrics.client_push_permission.labels(outcome=outcome).inc()
        case PushClick():
            metrics.client_push_clicks.inc()


@blueprint.post("/api/beacons")
@documented(
    "Report what the page saw: reconnections, reloads, push prompts and clicks, first event",
    body=BeaconBatch,
    response=None,
    status=204,
    errors=[RateLimited],
)
async def post_beacons() -> Response:
    """A batch of up to 50 beacons, all counted or (one bad entry) none; each adds to a
    `parley_client_*` metric on `/metrics`. Nothing is stored."""
    identity = await caller()
    batch = await json_body(BeaconBatch)
    await services().rate_limit.hit(identity.user_id, "beacon")
    metrics = services().metrics
    for beacon in batch.beacons:
        record(metrics, beacon)
    return Response(status=204)
