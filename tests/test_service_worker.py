"""`static/sw.js` and `static/notifications.js` in real Chromium.

A push shows the notification, once per notification id.

Headless Chromium cannot subscribe to a real push service (PITFALLS, Web Push), so the push
is handed to the service worker through the DevTools protocol
(`ServiceWorker.deliverPushMessage`), with the payload the server's sender encrypts.
Chromium is the machine's (`/usr/bin/chromium`), driven by Playwright.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, Worker

from .support import Server, bearer, sign
from .test_stream import make_discussion

pytestmark = [pytest.mark.browser, pytest.mark.slow]


SHOWN = """async () => {
  const registration = await navigator.serviceWorker.ready;
  const shown = await registration.getNotifications();
  return shown.map((n) => ({ title: n.title, body: n.body, tag: n.tag, data: n.data }));
}"""


def push_payload(notification_id: str) -> str:
    return json.dumps(
        {
            "notification": {
                "id": notification_id,
                "type": "mention",
                "priority": "high",
                "discussion_id": "d1",
                "response_id": "7",
                "actor": {"id": "carol", "name": "Carol"},
                "excerpt": "What does @bob think?",
                "created_at": "2026-11-25T18:00:00.000Z",
                "read_at": None,
            }
        }
    )


async def test_push_shows_one_notification_per_id(browser: Browser, start_server: Callable[..., Server]) -> None:
    server = start_server()
    context = await browser.new_context(base_url=server.url)
    await context.grant_permissions(["notifications"], origin=server.url)
    page = await context.new_page()
    await page.goto("/healthz")  # any page of the origin
    cdp = await context.new_cdp_session(page)
    registrations: asyncio.Queue[dict[str, Any]] = asyncio.Queue(100)
    cdp.on(
        "ServiceWorker.workerRegistrationUpdated",
        lambda event: [registrations.put_nowait(r) for r in event["registrations"]],
    )
    await cdp.send("ServiceWorker.enable")
    scope = await page.evaluate(
        """async () => {
          const registration = await navigator.serviceWorker.register("/sw.js", { scope: "/" });
          await navigator.serviceWorker.ready;
          return registration.scope;
        }"""
    )
    async with asyncio.timeout(10):
        while True:
            registration = await registrations.get()
            if registration["scopeURL"] == scope and not registration.get("isDeleted"):
                break
    for notification_id in ("n-1", "n-1", "n-2"):  # the first one delivered twice (at-least-once)
        await cdp.send(
            "ServiceWorker.deliverPushMessage",
            {
                "origin": server.url,
                "registrationId": registration["registrationId"],
                "data": push_payload(notification_id),
            },
        )
    async with asyncio.timeout(30):  # a loaded CI machine delivers slowly
        while True:
            shown = await page.evaluate(SHOWN)
            if len({n["tag"] for n in shown}) == 2:
                break
            await asyncio.sleep(0.05)
    await context.close()
    assert sorted(n["tag"] for n in shown) == ["n-1", "n-2"]
    first = next(n for n in shown if n["tag"] == "n-1")
    assert first["title"] == "Carol mentioned you"
    assert first["body"] == "What does @bob think?"
    assert first["data"] == {"id": "n-1", "discussion_id": "d1", "response_id": "7"}


async def test_page_module_loads_dedupes_and_marks_read(browser: Browser, start_server: Callable[..., Server]) -> None:
    """`static/notifications.js` against the real API, signed in with the session cookie."""
    server = start_server()
    bob, carol = sign("bob"), sign("carol")
    async with httpx.AsyncClient(timeout=10) as client:
        # Bob has signed in once: mentions resolve names of users Parley has seen.
        assert (await client.get(server.url + "/api/notifications", headers=bearer(bob))).json() == []
        discussion = await make_discussion(client, server, carol)
        r = await client.post(
            f"{server.url}/api/discussions/{discussion}/responses", json={"body": "@bob hi"}, headers=bearer(carol)
        )
        assert r.status_code == 201
        async with asyncio.timeout(10):
            while True:
                listed = (await client.get(server.url + "/api/notifications", headers=bearer(bob))).json()
                if listed:
                    break
                await asyncio.sleep(0.05)
        context = await browser.new_context(base_url=server.url)
        page = await context.new_page()
        await page.goto("/healthz")
        assert (await page.request.post("/api/session", headers=bearer(bob))).ok
        result = await page.evaluate(
            """async (id) => {
              const { Notifications } = await import("/static/notifications.js");
              const notes = new Notifications();
              await notes.load();
              const loaded = notes.list.length;
              const repeat = notes.receive({ type: "notification", payload: { notification: notes.list[0] } });
              const unreadBefore = notes.unread;
              notes.receive({ type: "notification_read", payload: { ids: [id], read_at: "2026-11-25T18:00:00.000Z" } });
              await notes.markRead(id);
              return { loaded, repeat, unreadBefore, unreadAfter: notes.unread };
            }""",
            listed[0]["id"],
        )
        await context.close()
        read = (await client.get(server.url + "/api/notifications", headers=bearer(bob))).json()
    assert result == {"loaded": 1, "repeat": False, "unreadBefore": 1, "unreadAfter": 0}
    assert read[0]["read_at"] is not None


# --- a click on a notification opens its discussion (issue 14) -------------------------------

CLICK = """async (discussion) => {
  // Headless Chromium cannot click a notification: show one and hand the worker the click the
  // browser would (a synthetic event; its waitUntil throws once the handler's work has started).
  await self.registration.showNotification("Bob replied to you", {
    tag: "n-click", data: { id: "n-click", discussion_id: discussion, response_id: "1" },
  });
  const [notification] = await self.registration.getNotifications({ tag: "n-click" });
  try {
    self.dispatchEvent(new NotificationEvent("notificationclick", { notification }));
  } catch { /* waitUntil on an untrusted event */ }
}"""


async def signed_in_with_worker(browser: Browser, server: Server) -> tuple[BrowserContext, Page, Worker]:
    """A context signed in as Alice (session cookie), on the home page, with sw.js running."""
    context = await browser.new_context(base_url=server.url)
    await context.grant_permissions(["notifications"], origin=server.url)
    page = await context.new_page()
    await page.goto("/healthz")
    assert (await page.request.post("/api/session", headers=bearer(sign("alice", "Alice")))).ok
    await page.goto("/")
    await page.wait_for_selector("body[data-ready=true]", timeout=20_000)
    async with context.expect_event("serviceworker", timeout=20_000) as registered:
        await page.evaluate(
            """async () => {
              await navigator.serviceWorker.register("/sw.js", { scope: "/" });
              await navigator.serviceWorker.ready;
            }"""
        )
    return context, page, await registered.value


async def test_a_click_with_a_parley_window_open_navigates_it(
    browser: Browser, start_server: Callable[..., Server]
) -> None:
    server = start_server()
    async with httpx.AsyncClient(timeout=10) as client:
        discussion = await make_discussion(client, server, sign("carol", "Carol"), title="Trams or buses?")
    context, page, worker = await signed_in_with_worker(browser, server)
    await worker.evaluate(CLICK, discussion)
    await page.wait_for_url(f"{server.url}/d/{discussion}", timeout=20_000)
    await page.wait_for_selector("#title:text('Trams or buses?')", timeout=20_000)
    await context.close()


async def test_a_click_with_no_window_open_opens_the_discussion(
    browser: Browser, start_server: Callable[..., Server]
) -> None:
    """The worker asks to open `/?discussion=<id>#response-<id>`; the page shows that discussion.
    `clients.openWindow` needs a real click (user activation), which headless Chromium cannot
    give, so the worker's request is recorded and the test opens that address itself."""
    server = start_server()
    async with httpx.AsyncClient(timeout=10) as client:
        discussion = await make_discussion(client, server, sign("carol", "Carol"), title="Trams or buses?")
    context, page, worker = await signed_in_with_worker(browser, server)
    await page.close()  # no Parley window left
    await worker.evaluate(
        """() => {
          self.opened = [];
          self.clients.openWindow = async (url) => { self.opened.push(url); return null; };
        }"""
    )
    await worker.evaluate(CLICK, discussion)
    async with asyncio.timeout(10):
        while not (opened := await worker.evaluate("self.opened")):
            await asyncio.sleep(0.05)
    assert opened == [f"{server.url}/?discussion={discussion}#response-1"]
    page = await context.new_page()
    await page.goto(opened[0])
    await page.wait_for_selector("#title:text('Trams or buses?')", timeout=20_000)
    assert page.url == f"{server.url}/d/{discussion}#response-1"
    await context.close()
