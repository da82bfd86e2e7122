"""The discussion page and `static/parley.js` in real Chromium, against real server processes.

Chromium comes from the machine's packages (`/usr/bin/chromium`); Playwright drives it with
`executable_path` (its own browser download does not work here). Network loss is Playwright's
`context.set_offline`, which Chromium reports to the page as `offline`/`online` events.

Waits here are generous upper bounds so a loaded CI machine does not flake; the spec's figures
(2 s delivery, 3 s loss detection, 5 s reconnection) are measured by `bench/reconnect.py`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from .support import Server, bearer, sign

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WAIT_MS = 20_000
TRANSPORTS = ["sse", "ws", "poll"]


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    # A short heartbeat so a dead WebSocket is noticed quickly even without an offline event.
    return start_server(PARLEY_HEARTBEAT_S="2")


async def signed_in(browser: Browser, at: Server | str, name: str, **options: Any) -> BrowserContext:
    """A browser profile signed in through the page's own development login, on a server or at a
    base URL (a proxy in front of one); `options` go to the context."""
    base_url = at if isinstance(at, str) else at.url
    context = await browser.new_context(base_url=base_url, **({"viewport": {"width": 1100, "height": 700}} | options))
    page = await context.new_page()
    await page.goto("/")
    await page.fill("#login-form input", name)
    await page.click("#login-form button")
    await expect(page.locator("#me-name")).to_have_text(name)
    await page.close()
    return context


async def post_all(server: Server, discussion: str, name: str, bodies: list[str]) -> None:
    """Posts every body at once, as `name` (a burst)."""
    async with httpx.AsyncClient() as client:
        await asyncio.gather(
            *(
                client.post(
                    f"{server.url}/api/discussions/{discussion}/responses",
                    json={"body": body},
                    headers=bearer(as_user(name)),
                )
                for body in bodies
            )
        )


async def open_discussion(context: BrowserContext, discussion: str, **params: str) -> Page:
    page = await context.new_page()
    query = "&".join(f"{k}={v}" for k, v in params.items())
    await page.goto(f"/d/{discussion}" + (f"?{query}" if query else ""))
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    return page


def as_user(name: str) -> str:
    """The token of the user the development login makes for `name`."""
    return sign(f"dev-{name.lower()}", name)


async def make_discussion(server: Server, title: str = "Should cities ban cars?") -> str:
    async with httpx.AsyncClient() as client:
        r = await client.post(server.url + "/api/discussions", json={"title": title}, headers=bearer(as_user("Host")))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def post(server: Server, discussion: str, name: str, body: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        r = await client.post(
            f"{server.url}/api/discussions/{discussion}/responses", json={"body": body}, headers=bearer(as_user(name))
        )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def stored_bodies(server: Server, discussion: str) -> list[str]:
    async with httpx.AsyncClient() as client:
        r = await client.get(
            f"{server.url}/api/discussions/{discussion}/responses?limit=200", headers=bearer(as_user("Host"))
        )
    return [response["body"] for response in r.json()["responses"]]


def response(page: Page, text: str) -> Any:
    return page.locator("#thread .response:not(.pending) .body", has_text=re.compile(f"^{re.escape(text)}$"))


async def connections(server: Server) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(server.url + "/metrics")).text
    return sum(float(value) for value in re.findall(r'^parley_connections\{transport="\w+"\} ([0-9.]+)$', text, re.M))


async def settled_connections(server: Server, expected: float) -> float:
    """The connection count once it reaches `expected` (or whatever it is after a while)."""
    count = await connections(server)
    for _ in range(100):
        if count == expected:
            break
        await asyncio.sleep(0.1)
        count = await connections(server)
    return count


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_live_offline_and_outbox_flows(browser: Browser, server: Server, transport: str) -> None:
    """Two people see each other's posts; losing the network shows the banner, coming back
    delivers what was missed; a post written offline arrives exactly once. Per transport."""
    discussion = await make_discussion(server)
    alice_context = await signed_in(browser, server, "Alice")
    bob_context = await signed_in(browser, server, "Bob")
    alice = await open_discussion(alice_context, discussion, transport=transport)
    bob = await open_discussion(bob_context, discussion, transport=transport)
    await expect(alice.locator("#status")).to_have_attribute("data-transport", transport)

    await alice.fill("#composer textarea", "Cars make streets unsafe for children.")
    await alice.click("#composer button")
    await expect(response(bob, "Cars make streets unsafe for children.")).to_be_visible(timeout=WAIT_MS)
    await expect(response(alice, "Cars make streets unsafe for children.")).to_have_count(1)

    await bob_context.set_offline(True)
    await expect(bob.locator("#connection-banner")).to_be_visible(timeout=WAIT_MS)
    await expect(bob.locator("#connection-banner")).to_contain_text("Connection lost, reconnecting")
    await post(server, discussion, "Carol", "But deliveries need access.")
    # Written while offline: queued as "Sending…", sent once the network is back.
    await bob.fill("#composer textarea", "Buses could handle most of it.")
    await bob.click("#composer button")
    await expect(bob.locator(".response.pending .note")).to_have_text("Sending…")

    await bob_context.set_offline(False)
    await expect(bob.locator("#status")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    await expect(bob.locator("#connection-banner")).to_be_hidden()
    await expect(response(bob, "But deliveries need access.")).to_be_visible(timeout=WAIT_MS)
    for page in (alice, bob):
        await expect(response(page, "Buses could handle most of it.")).to_be_visible(timeout=WAIT_MS)
    await expect(bob.locator(".response.pending")).to_have_count(0)
    # Exactly once: stored once, shown once on each page, in order.
    await alice.wait_for_timeout(1000)  # room for a duplicate to show up, if there were one
    for page in (alice, bob):
        await expect(response(page, "Buses could handle most of it.")).to_have_count(1)
        await expect(response(page, "But deliveries need access.")).to_have_count(1)
    assert await stored_bodies(server, discussion) == [
        "Cars make streets unsafe for children.",
        "But deliveries need access.",
        "Buses could handle most of it.",
    ]
    order = await bob.locator("#thread .response .body").all_inner_texts()
    assert order == await stored_bodies(server, discussion)


async def test_tabs_of_one_browser_share_one_connection(browser: Browser, server: Server) -> None:
    discussion = await make_discussion(server)
    context = await signed_in(browser, server, "Alice")
    tabs = [await open_discussion(context, discussion) for _ in range(3)]
    # The leader upgrades SSE to a WebSocket; the other tabs hold nothing.
    await expect(tabs[0].locator("#status")).to_have_attribute("data-transport", "ws", timeout=WAIT_MS)
    assert await settled_connections(server, 1) == 1
    await post(server, discussion, "Bob", "Seen by every tab")
    for tab in tabs:
        await expect(response(tab, "Seen by every tab")).to_be_visible(timeout=WAIT_MS)

    # The leader tab closes: another takes over, and nothing posted meanwhile is lost.
    await tabs[0].close()
    await post(server, discussion, "Bob", "During the handover")
    for tab in tabs[1:]:
        await expect(response(tab, "During the handover")).to_be_visible(timeout=WAIT_MS)
        await expect(response(tab, "During the handover")).to_have_count(1)
    assert await settled_connections(server, 1) == 1


async def test_scroll_position_is_kept_unless_at_the_bottom(browser: Browser, server: Server) -> None:
    discussion = await make_discussion(server)
    for i in range(40):
        await post(server, discussion, "Bob", f"Earlier point {i}")
    context = await signed_in(browser, server, "Alice")
    page = await open_discussion(context, discussion)
    thread = page.locator("#thread")
    await thread.evaluate("el => { el.scrollTop = 200; }")
    await post(server, discussion, "Bob", "A new point while Alice reads")
    await expect(page.locator("#new-banner")).to_have_text("1 new response ↓", timeout=WAIT_MS)
    await expect(response(page, "A new point while Alice reads")).to_have_count(1)
    assert await thread.evaluate("el => el.scrollTop") == 200

    await page.click("#new-banner")
    await expect(page.locator("#new-banner")).to_be_hidden()
    at_bottom = "el => el.scrollHeight - el.scrollTop - el.clientHeight < 48"
    assert await thread.evaluate(at_bottom)
    await post(server, discussion, "Bob", "Another point, Alice at the bottom")
    await expect(response(page, "Another point, Alice at the bottom")).to_be_visible(timeout=WAIT_MS)
    await page.wait_for_function(f"({at_bottom})(document.querySelector('#thread'))")
    await expect(page.locator("#new-banner")).to_be_hidden()


async def test_a_burst_while_reading_becomes_a_banner_then_renders_in_order(browser: Browser, server: Server) -> None:
    discussion = await make_discussion(server)
    for i in range(30):
        await post(server, discussion, "Bob", f"Old {i}")
    context = await signed_in(browser, server, "Alice")
    page = await open_discussion(context, discussion)
    await page.locator("#thread").evaluate("el => { el.scrollTop = 0; }")
    burst = [f"Burst {i}" for i in range(40)]
    await post_all(server, discussion, "Bob", burst)
    await expect(page.locator("#new-banner")).to_have_text("40 new responses ↓", timeout=WAIT_MS)
    # Held back behind the banner rather than rendered under the reader.
    assert await page.locator("#thread .response").count() < 70
    await page.click("#new-banner")
    await expect(page.locator("#thread .response")).to_have_count(70)
    shown = await page.locator("#thread .response .body").all_inner_texts()
    assert shown == await stored_bodies(server, discussion)


@pytest.mark.parametrize("log", ["embedded", "redis"])
async def test_a_server_restart_is_survived_without_a_reload(
    browser: Browser, start_server: Callable[..., Server], request: pytest.FixtureRequest, log: str
) -> None:
    """Embedded: the restarted log has a new epoch, so the page gets `sync_required` and
    refetches. Redis: the log outlives the process, so the page resumes by cursor."""
    env = {"PARLEY_HEARTBEAT_S": "2"}
    if log == "redis":
        env |= {
            "REDIS_URL": request.getfixturevalue("redis_url"),
            "PARLEY_REDIS_PREFIX": request.getfixturevalue("redis_prefix"),
        }
    server = start_server(**env)
    discussion = await make_discussion(server)
    context = await signed_in(browser, server, "Alice")
    page = await open_discussion(context, discussion, backoff="200")
    await page.evaluate("window.notReloaded = true")
    await asyncio.to_thread(server.stop)
    await expect(page.locator("#connection-banner")).to_be_visible(timeout=WAIT_MS)
    await asyncio.to_thread(server.start)
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    await post(server, discussion, "Bob", "Back after the restart")
    await expect(response(page, "Back after the restart")).to_be_visible(timeout=WAIT_MS)
    assert await page.evaluate("window.notReloaded") is True
    await expect(page.locator("#thread .response")).to_have_count(1)


async def test_refresh_button_after_ten_failed_tries(browser: Browser, server: Server) -> None:
    discussion = await make_discussion(server)
    context = await signed_in(browser, server, "Alice")
    page = await open_discussion(context, discussion, backoff="50", backoff_max="100")
    await asyncio.to_thread(server.stop)
    await expect(page.locator("#refresh")).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("#connection-banner")).to_contain_text("Could not reconnect after 10 tries")
    await expect(page.locator("#status")).to_have_attribute("data-state", "failed")
    await asyncio.to_thread(server.start)
    await page.click("#refresh")
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)


async def test_an_offline_post_fails_after_a_while_and_retry_sends_it_once(browser: Browser, server: Server) -> None:
    discussion = await make_discussion(server)
    context = await signed_in(browser, server, "Alice")
    page = await open_discussion(context, discussion, fail_after="1500")
    await context.set_offline(True)
    await page.fill("#composer textarea", "Written on the train")
    await page.click("#composer button")
    await expect(page.locator(".response.pending .note")).to_have_text("Sending…")
    await expect(page.locator(".response.pending .note")).to_contain_text("Failed", timeout=WAIT_MS)
    await context.set_offline(False)
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    # Still failed: once a post has failed, sending it again is the writer's decision.
    await expect(page.locator(".response.pending .note")).to_contain_text("Failed")
    await page.click(".response.pending .retry")
    await expect(response(page, "Written on the train")).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator(".response.pending")).to_have_count(0)
    await page.wait_for_timeout(500)
    await expect(response(page, "Written on the train")).to_have_count(1)
    assert await stored_bodies(server, discussion) == ["Written on the train"]


async def test_tabs_on_different_discussions_share_one_connection(browser: Browser, server: Server) -> None:
    first, second = await make_discussion(server, "Trees"), await make_discussion(server, "Rivers")
    context = await signed_in(browser, server, "Alice")
    leader = await open_discussion(context, first)
    await expect(leader.locator("#status")).to_have_attribute("data-transport", "ws", timeout=WAIT_MS)
    follower = await open_discussion(context, second)
    # The leader adds the follower's discussion to its one connection.
    await post(server, second, "Bob", "About rivers")
    await post(server, first, "Bob", "About trees")
    await expect(response(follower, "About rivers")).to_be_visible(timeout=WAIT_MS)
    await expect(response(leader, "About trees")).to_be_visible(timeout=WAIT_MS)
    await expect(response(follower, "About trees")).to_have_count(0)
    await expect(response(leader, "About rivers")).to_have_count(0)
    assert await settled_connections(server, 1) == 1


async def test_a_newcomer_signs_in_starts_a_discussion_and_posts(browser: Browser, server: Server) -> None:
    context = await browser.new_context(base_url=server.url)
    page = await context.new_page()
    await page.goto("/")
    await expect(page.locator("#login")).to_be_visible()
    await page.fill("#login-form input", "Dana")
    await page.click("#login-form button")
    await expect(page.locator("#home")).to_be_visible()
    await page.fill("#new-discussion input[name=title]", "Four-day work week?")
    await page.click("#new-discussion button")
    await page.wait_for_url(re.compile(r"/d/[\w-]+$"))
    await expect(page.locator("#title")).to_have_text("Four-day work week?")
    await expect(page.locator("#discussions li.current")).to_have_text("Four-day work week?")
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    await page.fill("#composer textarea", "Yes, productivity holds up.")
    await page.keyboard.press("Control+Enter")
    await expect(response(page, "Yes, productivity holds up.")).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("#thread .response.mine")).to_have_count(1)


# --- presence, typing and notifications on the page (issues 5, 6) ---------------------------


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_typing_shows_in_the_other_browser_and_clears(browser: Browser, server: Server, transport: str) -> None:
    discussion = await make_discussion(server)
    alice, bob = await signed_in(browser, server, "Alice"), await signed_in(browser, server, "Bob")
    alice_page = await open_discussion(alice, discussion, transport=transport)
    bob_page = await open_discussion(bob, discussion, transport=transport)
    # Both are here: each page lists the other.
    await expect(bob_page.locator("#online .avatar[title^='Alice']")).to_have_count(1, timeout=WAIT_MS)

    typing_line = bob_page.locator("#typing-line")
    await alice_page.locator("#composer textarea").press_sequentially("I think", delay=50)
    await expect(typing_line).to_have_text("Alice is typing…", timeout=WAIT_MS)
    # No keystroke for 5 s: the indicator goes (the server expires it, the page says stop).
    await expect(typing_line).to_have_text("", timeout=WAIT_MS + 5_000)

    await alice_page.locator("#composer textarea").press_sequentially("Cars are", delay=50)
    await expect(typing_line).to_have_text("Alice is typing…", timeout=WAIT_MS)
    await alice_page.locator("#composer button").click()
    # Posting clears it at once, and the response arrives.
    await expect(typing_line).to_have_text("", timeout=WAIT_MS)
    await expect(bob_page.locator("#thread .body", has_text="Cars are")).to_have_count(1, timeout=WAIT_MS)
    # Nobody sees their own typing.
    await expect(alice_page.locator("#typing-line")).to_have_text("")


async def test_a_reply_notification_appears_once_in_every_tab(browser: Browser, server: Server) -> None:
    discussion = await make_discussion(server)
    alice = await signed_in(browser, server, "Alice")
    tabs = [await open_discussion(alice, discussion) for _ in range(3)]
    mine = await post(server, discussion, "Alice", "Parks first.")
    await expect(tabs[0].locator("#thread .body", has_text="Parks first.")).to_have_count(1, timeout=WAIT_MS)

    reply = await post(server, discussion, "Bob", "@Alice what about buses?")
    assert reply["body"].startswith("@Alice")
    assert mine["id"]
    for tab in tabs:
        await expect(tab.locator("#bell-count")).to_have_text("1", timeout=WAIT_MS)
        await tab.click("#bell")
        await expect(tab.locator("#notification-list li")).to_have_count(1)
    # Read in one tab: the others follow (notification_read).
    await tabs[0].click("#read-all")
    for tab in tabs:
        await expect(tab.locator("#bell-count")).to_be_hidden(timeout=WAIT_MS)
