"""The page's promises of issue 14, in real Chromium against real server processes.

- FR-008: `activity` events keep "Your discussions" live (unread count, newest first).
- Offline post: the outbox survives a reload and each post is stored once (by `client_id`).
- A push click with no window open lands on `/?discussion=<id>`: the page opens that discussion.
- FR-034, FR-004, FR-005: typing and presence shown to others, the arrival animation, and the
  500 ms render batching (counted as DOM mutation batches, not inferred from the banner).

Helpers (sign-in, posting over REST) are those of tests/test_browser.py; waits are upper bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
import pytest
from playwright.async_api import Browser, Page, Route, expect
from playwright.async_api import Error as PlaywrightError

from .push_service import PushService
from .support import Server, bearer
from .test_browser import WAIT_MS, as_user, make_discussion, open_discussion, post, response, signed_in, stored_bodies
from .test_push_when_away import push_state

pytestmark = [pytest.mark.browser, pytest.mark.slow]

T = TypeVar("T")


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    return start_server(PARLEY_HEARTBEAT_S="2")


async def follow(server: Server, discussion: str, name: str) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.put(f"{server.url}/api/discussions/{discussion}/follow", headers=bearer(as_user(name)))
    assert r.status_code == 200, r.text


async def home(browser: Browser, server: Server, name: str) -> Page:
    context = await signed_in(browser, server, name)
    page = await context.new_page()
    await page.goto("/")
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    return page


def listed(page: Page, discussion: str) -> object:
    return page.locator(f'#discussions li[data-id="{discussion}"]')


async def order(page: Page) -> list[str]:
    return list(await page.locator("#discussions li").evaluate_all("items => items.map((li) => li.dataset.id)"))


async def until(
    read: Callable[[], Awaitable[T]], wanted: T, timeout_s: float = WAIT_MS / 1000, *, changed_from: T | None = None
) -> T:
    """What `read` returns once it equals `wanted` (or, with `changed_from`, once it differs
    from that); raises TimeoutError after `timeout_s`."""
    done = (lambda v: v != changed_from) if changed_from is not None else (lambda v: v == wanted)
    value = await read()
    async with asyncio.timeout(timeout_s):
        while not done(value):
            await asyncio.sleep(0.05)
            value = await read()
    return value


# --- FR-008: the followed list, live --------------------------------------------------------


async def test_activity_updates_the_followed_list_without_a_reload(browser: Browser, server: Server) -> None:
    trees, rivers = await make_discussion(server, "Trees"), await make_discussion(server, "Rivers")
    await follow(server, trees, "Alice")
    await follow(server, rivers, "Alice")
    page = await home(browser, server, "Alice")
    await expect(page.locator("#discussions li")).to_have_count(2)
    await page.evaluate("window.notReloaded = true")

    await post(server, trees, "Bob", "Plant more oaks")
    await expect(listed(page, trees).locator(".badge")).to_have_text("1", timeout=WAIT_MS)
    assert (await order(page))[0] == trees
    await post(server, trees, "Bob", "And limes")
    await expect(listed(page, trees).locator(".badge")).to_have_text("2", timeout=WAIT_MS)

    await post(server, rivers, "Carol", "Clean the banks")
    await expect(listed(page, rivers).locator(".badge")).to_have_text("1", timeout=WAIT_MS)
    assert await until(lambda: order(page), [rivers, trees]) == [rivers, trees]

    # Followed after the page loaded: the first activity adds it to the list, at the top.
    lakes = await make_discussion(server, "Lakes")
    await follow(server, lakes, "Alice")
    await post(server, lakes, "Bob", "Swimming allowed?")
    await expect(listed(page, lakes)).to_have_text("Lakes1", timeout=WAIT_MS)
    assert await order(page) == [lakes, rivers, trees]
    assert await page.evaluate("window.notReloaded") is True


# --- a push click's address: /?discussion=<id> -----------------------------------------------


async def test_the_page_opens_the_discussion_named_in_the_address(browser: Browser, server: Server) -> None:
    """What a push click opens when no Parley window is open (static/sw.js)."""
    discussion = await make_discussion(server, "Night buses")
    first = await post(server, discussion, "Bob", "Run them hourly")
    for i in range(30):
        await post(server, discussion, "Bob", f"Filler {i}")
    context = await signed_in(browser, server, "Alice")
    page = await context.new_page()
    await page.goto(f"/?discussion={discussion}&transport=ws#response-{first['id']}")
    await expect(page.locator("#title")).to_have_text("Night buses", timeout=WAIT_MS)
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    await expect(page.locator("#home")).to_be_hidden()
    # The address is the discussion's own (a reload or a shared link shows it too), other
    # options kept; the response the notification was about is in view and marked.
    assert page.url == f"{server.url}/d/{discussion}?transport=ws#response-{first['id']}"
    await expect(page.locator("#status")).to_have_attribute("data-transport", "ws")
    linked = page.locator(f'#thread .response[data-id="{first["id"]}"]')
    await expect(linked).to_have_class(re.compile(r"\blinked\b"))
    await expect(linked).to_be_in_viewport()
    await post(server, discussion, "Carol", "Live here too")
    await expect(response(page, "Live here too")).to_be_visible(timeout=WAIT_MS)
    await page.reload()
    await expect(page.locator("#title")).to_have_text("Night buses", timeout=WAIT_MS)


# --- offline post: the outbox survives a reload ---------------------------------------------


OUTBOX_KEYS = "() => Object.keys(localStorage).filter((key) => key.startsWith('parley.outbox.'))"


async def test_an_offline_post_survives_a_reload_and_is_stored_once(browser: Browser, server: Server) -> None:
    discussion = await make_discussion(server)
    context = await signed_in(browser, server, "Alice")
    page = await open_discussion(context, discussion)
    await context.set_offline(True)
    await page.fill("#composer textarea", "Written in the tunnel")
    await page.click("#composer button")
    await expect(page.locator(".response.pending .note")).to_have_text("Sending…")
    assert len(await page.evaluate(OUTBOX_KEYS)) == 1

    # Reloaded still offline: the browser shows its own error page; the tab's memory is gone.
    with contextlib.suppress(PlaywrightError):
        await page.reload()
    assert await page.locator("#composer").count() == 0
    await context.set_offline(False)
    await page.goto(f"/d/{discussion}")
    await expect(response(page, "Written in the tunnel")).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator(".response.pending")).to_have_count(0)
    await page.wait_for_timeout(1000)  # room for a duplicate to show up, if there were one
    await expect(response(page, "Written in the tunnel")).to_have_count(1)
    assert await stored_bodies(server, discussion) == ["Written in the tunnel"]
    assert await page.evaluate(OUTBOX_KEYS) == []


async def test_a_post_whose_answer_was_lost_is_sent_again_after_a_reload_and_stored_once(
    browser: Browser, server: Server
) -> None:
    """The server stored the post but the page never heard back (the connection dropped with the
    answer in flight): after a reload the page sends it again, and the server's dedupe by
    `client_id` returns the first response instead of storing a second."""
    discussion = await make_discussion(server)
    context = await signed_in(browser, server, "Alice")
    page = await open_discussion(context, discussion)
    reached: list[int] = []

    async def lose_the_answer(route: Route) -> None:
        if route.request.method != "POST":
            await route.continue_()
            return
        if not reached:
            answer = await route.fetch()  # the server stores it...
            reached.append(answer.status)
        await route.abort("connectionreset")  # ...and the page never hears back; nor of a retry

    responses = f"**/api/discussions/{discussion}/responses"
    await page.route(responses, lose_the_answer)
    await page.fill("#composer textarea", "Said once")
    await page.click("#composer button")
    async with asyncio.timeout(WAIT_MS / 1000):
        while not reached:
            await asyncio.sleep(0.05)
    assert reached[0] == 201
    assert await stored_bodies(server, discussion) == ["Said once"]
    await expect(page.locator(".response.pending .note")).to_have_text("Sending…")

    await page.reload()
    # Restored from localStorage and shown as sending (the route still loses every try)...
    await expect(page.locator(".response.pending .note")).to_have_text("Sending…", timeout=WAIT_MS)
    assert len(await page.evaluate(OUTBOX_KEYS)) == 1
    # ...then the network works again: the retry gets the first response back.
    await page.unroute(responses, lose_the_answer)
    await expect(page.locator("#thread .response:not(.pending)")).to_have_count(1, timeout=WAIT_MS)
    await expect(page.locator(".response.pending")).to_have_count(0, timeout=WAIT_MS)
    await page.wait_for_timeout(1000)
    await expect(response(page, "Said once")).to_have_count(1)
    assert await stored_bodies(server, discussion) == ["Said once"]
    assert await page.evaluate(OUTBOX_KEYS) == []


# --- FR-009: every tab hidden means a push --------------------------------------------------

# Headless Chromium reports every page as visible, whatever is done to its window (minimizing it
# through the DevTools protocol changes nothing), so a tab is hidden the way the browser tells
# the page: `document.visibilityState` says "hidden" and `visibilitychange` fires.
HIDE = """(hidden) => {
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => hidden ? "hidden" : "visible" });
  Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
  document.dispatchEvent(new Event("visibilitychange"));
}"""


async def presence_of(server: Server, discussion: str, user_id: str) -> str | None:
    async with httpx.AsyncClient() as client:
        r = await client.get(f"{server.url}/api/discussions/{discussion}/presence", headers=bearer(as_user("Host")))
    return next((p["status"] for p in r.json()["participants"] if p["id"] == user_id), None)


async def test_a_push_reaches_the_user_when_every_tab_is_hidden(
    browser: Browser, start_server: Callable[..., Server]
) -> None:
    server = start_server(PARLEY_HEARTBEAT_S="2", PARLEY_PUSH_ALLOW_INSECURE="1")
    discussion = await make_discussion(server, "Bike lanes")
    with PushService() as push_service:
        laptop = push_service.browser("alice-laptop")
        async with httpx.AsyncClient() as client:
            r = await client.post(
                server.url + "/api/push/subscriptions", json=laptop.subscription, headers=bearer(as_user("Alice"))
            )
        assert r.status_code == 201, r.text
        context = await signed_in(browser, server, "Alice")
        tabs = [await open_discussion(context, discussion) for _ in range(2)]
        await expect(tabs[0].locator("#status")).to_have_attribute("data-transport", "ws", timeout=WAIT_MS)

        async def mention(text: str) -> str:
            """Bob mentions Alice; the id of her notification, once it is stored."""
            before = await notification_ids(server)
            await post(server, discussion, "Bob", f"@Alice {text}")
            return (await until(lambda: notification_ids(server), None, changed_from=before))[0]

        assert await until(lambda: presence_of(server, discussion, "dev-alice"), "online") == "online"
        assert push_state(server, await mention("both tabs in view")) == "none"

        # One tab hidden, the other in view: still online (the leader speaks for both tabs).
        await tabs[1].evaluate(HIDE, True)
        await tabs[1].wait_for_timeout(1000)  # room for a wrong "away" to arrive, if there were one
        assert await presence_of(server, discussion, "dev-alice") == "online"
        assert push_state(server, await mention("one tab hidden")) == "none"

        # Every tab hidden: away everywhere, so the mention goes out as a push too.
        await tabs[0].evaluate(HIDE, True)
        assert await until(lambda: presence_of(server, discussion, "dev-alice"), "away") == "away"
        away = await mention("every tab hidden")
        assert push_state(server, away) != "none"
        async with asyncio.timeout(WAIT_MS / 1000):
            while not (push_service.received_by("alice-laptop") or push_service.errors):
                await asyncio.sleep(0.05)
        assert push_service.errors == []
        [push] = push_service.received_by("alice-laptop")
        assert push.payload["notification"]["id"] == away
        # The notification is in-app as well, in both tabs.
        for tab in tabs:
            await expect(tab.locator("#bell-count")).to_have_text("3", timeout=WAIT_MS)

        # A tab back in view: in-app only again.
        await tabs[1].evaluate(HIDE, False)
        assert await until(lambda: presence_of(server, discussion, "dev-alice"), "online") == "online"
        assert push_state(server, await mention("back")) == "none"
        assert len(push_service.received_by("alice-laptop")) == 1


async def notification_ids(server: Server) -> list[str]:
    async with httpx.AsyncClient() as client:
        r = await client.get(server.url + "/api/notifications", headers=bearer(as_user("Alice")))
    return [n["id"] for n in r.json()]


# --- FR-034, FR-004, FR-005 ----------------------------------------------------------------


async def test_away_and_back_are_visible_to_others(browser: Browser, server: Server) -> None:
    """FR-034: the other participants see when someone's page goes to the background and back,
    and when they leave."""
    discussion = await make_discussion(server)
    alice = await open_discussion(await signed_in(browser, server, "Alice"), discussion)
    bob = await open_discussion(await signed_in(browser, server, "Bob"), discussion)
    face = bob.locator("#online .avatar[title^='Alice']")
    await expect(face).to_have_attribute("title", "Alice (online)", timeout=WAIT_MS)
    await expect(face).not_to_have_class(re.compile(r"\baway\b"))

    await alice.evaluate(HIDE, True)
    await expect(face).to_have_attribute("title", "Alice (away)", timeout=WAIT_MS)
    await expect(face).to_have_class(re.compile(r"\baway\b"))
    await alice.evaluate(HIDE, False)
    await expect(face).to_have_attribute("title", "Alice (online)", timeout=WAIT_MS)

    await alice.close()
    await expect(face).to_have_count(0, timeout=WAIT_MS)  # after the leave grace period


WATCH_ARRIVALS = """() => {
  // Which responses start the arrival animation (FR-004), and every DOM mutation batch of the
  // thread: a MutationObserver callback runs once per task that changed it, so each render is one.
  window.animated = [];
  document.querySelector("#thread").addEventListener("animationstart", (event) => {
    const item = event.target.closest(".response");
    if (item) window.animated.push({ text: item.querySelector(".body").textContent, name: event.animationName });
  });
  window.batches = [];
  new MutationObserver((changes) => {
    const added = changes.flatMap((change) => [...change.addedNodes]).filter((node) => node.matches?.(".response"));
    if (added.length) window.batches.push({ at: performance.now(), added: added.length });
  }).observe(document.querySelector("#thread"), { childList: true });
}"""


COUNT_RESPONSE_MESSAGES = """
  // Counts the WebSocket messages that carry a response_posted event (each is one task).
  window.responseMessages = 0;
  window.WebSocket = class extends WebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (message) => {
        if (String(message.data).includes('"type":"response_posted"')) window.responseMessages += 1;
      });
    }
  };
"""


async def test_a_new_response_arrives_with_the_arrival_animation(browser: Browser, server: Server) -> None:
    """FR-004: a response arriving live animates in (class `is-new`, animation `arrive`);
    responses loaded with the page do not."""
    discussion = await make_discussion(server)
    await post(server, discussion, "Bob", "Already here")
    page = await open_discussion(await signed_in(browser, server, "Alice"), discussion)
    await page.evaluate(WATCH_ARRIVALS)
    await expect(page.locator("#thread .response.is-new")).to_have_count(0)

    await post(server, discussion, "Bob", "Just arrived")
    arrived = page.locator("#thread .response", has_text="Just arrived")
    await expect(arrived).to_have_class(re.compile(r"\bis-new\b"), timeout=WAIT_MS)
    # The class goes when the animation ends, so a re-render never replays it.
    await expect(arrived).not_to_have_class(re.compile(r"\bis-new\b"), timeout=WAIT_MS)
    animated = await page.evaluate("window.animated")
    assert {"text": "Just arrived", "name": "arrive"} in animated
    assert all(entry["text"] != "Already here" for entry in animated)


async def test_a_burst_is_rendered_in_batches_at_most_every_500_ms(browser: Browser, server: Server) -> None:
    """FR-005: events arriving close together are rendered together, at most one render per
    500 ms: 20 responses posted at once reach the page as 20 events (20 tasks) but change the
    thread in a few batches, each at least 500 ms after the one before."""
    discussion = await make_discussion(server)
    context = await signed_in(browser, server, "Alice")
    await context.add_init_script(COUNT_RESPONSE_MESSAGES)
    page = await open_discussion(context, discussion)
    await expect(page.locator("#status")).to_have_attribute("data-transport", "ws", timeout=WAIT_MS)
    await page.evaluate(WATCH_ARRIVALS)
    burst = [f"Burst {i}" for i in range(20)]
    async with httpx.AsyncClient() as client:
        await asyncio.gather(
            *(
                client.post(
                    f"{server.url}/api/discussions/{discussion}/responses",
                    json={"body": body},
                    headers=bearer(as_user("Bob")),
                )
                for body in burst
            )
        )
    await expect(page.locator("#thread .response")).to_have_count(20, timeout=WAIT_MS)
    batches = await page.evaluate("window.batches")
    # 20 messages, each its own task: rendered as they came, that would be about 20 batches.
    assert await page.evaluate("window.responseMessages") == 20
    assert sum(batch["added"] for batch in batches) == 20
    assert len(batches) < 20, batches
    # Renders start at least 500 ms apart; the observer sees each one when it ends, so the gaps
    # it measures may be shorter by a render's length (tens of ms). Rendering event by event
    # would give gaps of a few ms; 300 ms leaves room for a slow machine.
    gaps = [later["at"] - earlier["at"] for earlier, later in itertools.pairwise(batches)]
    assert all(gap >= 300 for gap in gaps), gaps
    assert await page.locator("#thread .response .body").all_inner_texts() == await stored_bodies(server, discussion)
