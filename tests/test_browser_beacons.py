"""`static/beacons.js` in real Chromium against a real server: the page reports its first live
event, a reconnection after the server restarts, and a reload by hand while the connection is
lost, and each shows on `/metrics` (issue 16, item 2). The endpoint's own checks are in
`tests/test_beacons.py`."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

import pytest
from playwright.async_api import Browser, Route, expect

from .support import Server
from .test_beacons import client_metrics
from .test_browser import WAIT_MS, make_discussion, open_discussion, post, response, signed_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]

STREAMS = re.compile(r"/(stream|poll)\?")


async def metrics_until(server: Server, ready: Callable[[dict[str, float]], bool]) -> dict[str, float]:
    """The client metrics once `ready` holds (the page sends every few hundred ms here)."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        metrics = await asyncio.to_thread(client_metrics, server)
        if ready(metrics) or time.monotonic() > deadline:
            return metrics
        await asyncio.sleep(0.2)


def reconnections(metrics: dict[str, float]) -> float:
    return sum(v for k, v in metrics.items() if k.startswith("parley_client_reconnects_total{"))


async def test_the_page_reports_first_event_reconnection_and_manual_reload(
    browser: Browser, start_server: Callable[..., Server]
) -> None:
    server = start_server(PARLEY_HEARTBEAT_S="2", PARLEY_CHECK_RESPONSES="1")
    discussion = await make_discussion(server)
    context = await signed_in(browser, server, "Alice")
    page = await open_discussion(context, discussion, transport="sse", backoff="200", beacon_every="300")

    await post(server, discussion, "Bob", "The first live event")
    await expect(response(page, "The first live event")).to_be_visible(timeout=WAIT_MS)
    seen = await metrics_until(server, lambda m: m.get("parley_client_first_event_seconds_count", 0) >= 1)
    assert seen["parley_client_first_event_seconds_count"] == 1
    assert seen.get("parley_client_page_loads_total", 0) >= 1
    assert seen.get("parley_client_manual_reloads_total", 0) == 0

    # The server goes away and comes back (a new process: its metrics start from zero).
    await asyncio.to_thread(server.stop)
    await expect(page.locator("#connection-banner")).to_be_visible(timeout=WAIT_MS)
    await asyncio.to_thread(server.start)
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    seen = await metrics_until(server, lambda m: reconnections(m) >= 1)
    assert reconnections(seen) == 1
    assert seen["parley_client_reconnect_seconds_count"] == 1
    assert seen["parley_client_reconnect_attempts_total"] >= 1
    assert seen.get("parley_client_manual_reloads_total", 0) == 0

    # Lost again, and this time the reader reloads by hand before it is back (SC-008).
    async def refuse(route: Route) -> None:
        await route.abort()

    await page.route(STREAMS, refuse)
    await asyncio.to_thread(server.stop)
    await expect(page.locator("#connection-banner")).to_be_visible(timeout=WAIT_MS)
    await asyncio.to_thread(server.start)
    await page.reload()
    seen = await metrics_until(server, lambda m: m.get("parley_client_manual_reloads_total", 0) >= 1)
    assert seen["parley_client_manual_reloads_total"] == 1
    assert seen["parley_client_page_loads_total"] >= 1
    await page.unroute(STREAMS, refuse)
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)


async def test_an_ordinary_reload_is_not_a_manual_one(browser: Browser, start_server: Callable[..., Server]) -> None:
    server = start_server(PARLEY_CHECK_RESPONSES="1")
    discussion = await make_discussion(server)
    context = await signed_in(browser, server, "Alice")
    page = await open_discussion(context, discussion, beacon_every="300")
    await page.reload()
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    seen = await metrics_until(server, lambda m: m.get("parley_client_page_loads_total", 0) >= 3)
    # Sign-in page, the discussion, its reload: three pages, none reloaded after a loss.
    assert seen["parley_client_page_loads_total"] >= 2
    assert seen.get("parley_client_manual_reloads_total", 0) == 0


async def test_asking_for_push_permission_is_reported(browser: Browser, start_server: Callable[..., Server]) -> None:
    server = start_server(PARLEY_CHECK_RESPONSES="1")
    discussion = await make_discussion(server)
    context = await signed_in(browser, server, "Alice")
    page = await open_discussion(context, discussion, beacon_every="300")
    assert await page.evaluate("Notification.permission") == "default"
    await page.click("#bell")
    await page.click("#enable-push")
    seen = await metrics_until(server, lambda m: m.get('parley_client_push_permission_total{outcome="asked"}', 0) >= 1)
    assert seen['parley_client_push_permission_total{outcome="asked"}'] == 1
    # Headless Chromium answers the prompt itself: denied.
    assert await page.evaluate("Notification.permission") == "denied"
    seen = await metrics_until(server, lambda m: m.get('parley_client_push_permission_total{outcome="denied"}', 0) >= 1)
    assert seen['parley_client_push_permission_total{outcome="denied"}'] == 1
    assert seen.get('parley_client_push_permission_total{outcome="granted"}', 0) == 0


async def test_a_push_notification_click_is_reported_by_the_service_worker(
    browser: Browser, start_server: Callable[..., Server]
) -> None:
    server = start_server(PARLEY_CHECK_RESPONSES="1")
    context = await signed_in(browser, server, "Alice")
    await context.grant_permissions(["notifications"], origin=server.url)
    page = await context.new_page()
    await page.goto("/healthz")  # any page of the origin
    async with context.expect_event("serviceworker", timeout=WAIT_MS) as registered:
        await page.evaluate(
            """async () => {
              await navigator.serviceWorker.register("/sw.js", { scope: "/" });
              await navigator.serviceWorker.ready;
            }"""
        )
    worker = await registered.value
    # Headless Chromium cannot click a notification: show one and hand the worker a click on
    # it, as the browser would (a synthetic event; `waitUntil` refuses those, after the handler
    # has started its work).
    await worker.evaluate(
        """async () => {
          await self.registration.showNotification("Carol replied to you", {
            tag: "n-1", data: { id: "n-1", discussion_id: "d1", response_id: "7" },
          });
          const [notification] = await self.registration.getNotifications({ tag: "n-1" });
          try {
            self.dispatchEvent(new NotificationEvent("notificationclick", { notification }));
          } catch { /* waitUntil on an untrusted event */ }
        }"""
    )
    seen = await metrics_until(server, lambda m: m.get("parley_client_push_clicks_total", 0) >= 1)
    assert seen["parley_client_push_clicks_total"] == 1
