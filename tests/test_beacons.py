"""Client beacons (`POST /api/beacons`) against a real server: a good batch moves the
`parley_client_*` metrics; a bad one is refused with 4xx and moves nothing; past the per-user
limit, 429. The page's side (`static/beacons.js`) is in `tests/test_browser_beacons.py`."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from .support import Server, bearer, sign

pytestmark = pytest.mark.slow

CLIENT_METRIC = re.compile(r"^(parley_client_[a-z_0-9]+(?:\{[^}]*\})?) (\S+)$", re.MULTILINE)


def client_metrics(server: Server) -> dict[str, float]:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return {series: float(value) for series, value in CLIENT_METRIC.findall(text)}


def send(server: Server, body: Any, token: str | None = None, **headers: str) -> httpx.Response:
    auth = bearer(token or sign("beacon-user", "Beacon User"))
    content = body if isinstance(body, bytes) else None
    return httpx.post(
        server.url + "/api/beacons",
        content=content,
        json=None if content is not None else body,
        headers={**auth, **headers} if content is None else {**auth, "Content-Type": "application/json", **headers},
        timeout=10,
    )


GOOD_BATCH = {
    "beacons": [
        {"kind": "page_open"},
        {"kind": "first_event", "seconds": 0.8},
        {"kind": "reconnected", "seconds": 1.5, "attempts": 2},
        {"kind": "reconnected", "seconds": 12, "attempts": 5},
        {"kind": "reconnect_failed", "attempts": 10},
        {"kind": "manual_reload"},
        {"kind": "push_permission", "outcome": "asked"},
        {"kind": "push_permission", "outcome": "denied"},
        {"kind": "push_click"},
    ]
}


def test_a_batch_moves_the_client_metrics(start_server: Callable[..., Server]) -> None:
    server = start_server(PARLEY_CHECK_RESPONSES="1")
    r = send(server, GOOD_BATCH)
    assert r.status_code == 204, r.text
    assert r.content == b""
    after = client_metrics(server)
    assert after["parley_client_page_loads_total"] == 1
    assert after["parley_client_first_event_seconds_count"] == 1
    assert after['parley_client_first_event_seconds_bucket{le="1.0"}'] == 1
    assert after['parley_client_reconnects_total{within_5s="yes"}'] == 1
    assert after['parley_client_reconnects_total{within_5s="no"}'] == 1
    assert after["parley_client_reconnect_seconds_count"] == 2
    assert after["parley_client_reconnect_seconds_sum"] == pytest.approx(13.5)
    assert after["parley_client_reconnect_attempts_total"] == 17
    assert after["parley_client_reconnect_failures_total"] == 1
    assert after["parley_client_manual_reloads_total"] == 1
    assert after['parley_client_push_permission_total{outcome="asked"}'] == 1
    assert after['parley_client_push_permission_total{outcome="denied"}'] == 1
    assert after["parley_client_push_clicks_total"] == 1


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        ([{"kind": "page_open"}], 400),
        ({"beacons": []}, 422),
        ({"beacons": [{"kind": "page_open"}] * 51}, 422),
        ({"beacons": [{"kind": "page_open"}, {"kind": "crashed"}]}, 422),
        ({"beacons": [{"kind": "page_open"}, {"kind": "first_event", "seconds": 3601}]}, 422),
        ({"beacons": [{"kind": "first_event", "seconds": -1}]}, 422),
        ({"beacons": [{"kind": "first_event", "seconds": "2"}]}, 422),
        ({"beacons": [{"kind": "reconnected", "seconds": 1, "attempts": 10**6}]}, 422),
        ({"beacons": [{"kind": "reconnected", "seconds": 1, "attempts": True}]}, 422),
        ({"beacons": [{"kind": "push_permission", "outcome": "maybe"}]}, 422),
        ({"beacons": [{"kind": "push_click", "url": "https://example.com"}]}, 422),
        ({"beacons": [{"kind": "page_open"}], "extra": 1}, 422),
        (b'{"beacons": [{"kind": "first_event", "seconds": NaN}]}', 422),
        (b'{"beacons": [' + b'{"kind": "page_open"},' * 9000 + b'{"kind": "page_open"}]}', 413),
    ],
)
def test_bad_batches_are_refused_and_count_nothing(start_server: Callable[..., Server], body: Any, status: int) -> None:
    server = start_server(PARLEY_CHECK_RESPONSES="1")
    before = client_metrics(server)
    r = send(server, body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] in {"malformed_json", "invalid_field", "payload_too_large"}
    assert client_metrics(server) == before
    assert "crashed" not in server.log() and "example.com" not in server.log()


def test_unauthenticated_and_cross_site_beacons_are_refused(start_server: Callable[..., Server]) -> None:
    server = start_server(PARLEY_CHECK_RESPONSES="1")
    before = client_metrics(server)
    r = httpx.post(server.url + "/api/beacons", json=GOOD_BATCH, timeout=10)
    assert r.status_code == 401
    cookie = {"Cookie": f"parley_token={sign('beacon-user')}", "Content-Type": "application/json"}
    forged = httpx.post(
        server.url + "/api/beacons",
        content=b'{"beacons": [{"kind": "page_open"}]}',
        headers={**cookie, "Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        timeout=10,
    )
    assert forged.status_code == 403
    assert client_metrics(server) == before
    # What sendBeacon sends from our own page: the cookie, same-origin, a JSON Blob.
    own = httpx.post(
        server.url + "/api/beacons",
        content=b'{"beacons": [{"kind": "page_open"}]}',
        headers={**cookie, "Origin": server.url, "Sec-Fetch-Site": "same-origin"},
        timeout=10,
    )
    assert own.status_code == 204, own.text
    assert client_metrics(server)["parley_client_page_loads_total"] == 1


def test_past_the_per_user_limit_beacons_get_429(start_server: Callable[..., Server]) -> None:
    server = start_server(PARLEY_CHECK_RESPONSES="1", PARLEY_BEACON_LIMIT_PER_MIN="3")
    one = {"beacons": [{"kind": "push_click"}]}
    assert [send(server, one).status_code for _ in range(3)] == [204, 204, 204]
    refused = send(server, one)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    # Another user has an allowance of their own.
    assert send(server, one, token=sign("someone-else")).status_code == 204
    assert client_metrics(server)["parley_client_push_clicks_total"] == 4
