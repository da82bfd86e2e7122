"""The connection promises of `static/parley.js` in real Chromium against real server processes
(issue 14): idle pause (FR-035), silent drops (FR-022), buffering proxies (FR-026), token
refresh and sign-out (NFR-013), the backoff schedule (FR-024), sleep and background (FR-037).

Misbehaving networks come from `tests/proxy.py`, a TCP proxy on loopback that the test drives.
Waits are upper bounds for a loaded machine; the detection figures are `bench/silent_drop.py`'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from .proxy import ControlledProxy
from .support import Server
from .test_browser import WAIT_MS, connections, make_discussion, post, response, settled_connections

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HEARTBEAT_S = 1.0
GRACE_S = 3.0  # parley.js HEARTBEAT_GRACE_MS
# The documented bound (docs/API.md, Streams): a silent drop is noticed at most heartbeat_s +
# 3 s after the last byte heard. Slack for a machine shared with other jobs.
DETECTION_BOUND_S = HEARTBEAT_S + GRACE_S
SLACK_S = 3.0

# Every status the page shows, in page order, with Date.now() (the test's clock: same machine).
STATUS_LOG = """() => {
  window.statusLog = [];
  const record = () => window.statusLog.push({state: document.querySelector('#status').dataset.state,
                                              transport: document.querySelector('#status').dataset.transport,
                                              at: Date.now()});
  new MutationObserver(record).observe(document.querySelector('#status'),
                                       {attributes: true, attributeFilter: ['data-state', 'data-transport']});
}"""


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    return start_server(PARLEY_HEARTBEAT_S=str(HEARTBEAT_S))


@pytest.fixture
async def proxy(server: Server) -> AsyncIterator[ControlledProxy]:
    proxy = await ControlledProxy(server.port).start()
    yield proxy
    await proxy.close()


async def signed_in_at(browser: Browser, base_url: str, name: str) -> BrowserContext:
    """A browser profile signed in through the page's development login, at `base_url`."""
    context = await browser.new_context(base_url=base_url, viewport={"width": 1100, "height": 700})
    page = await context.new_page()
    await page.goto("/")
    await page.fill("#login-form input", name)
    await page.click("#login-form button")
    await expect(page.locator("#me-name")).to_have_text(name)
    await page.close()
    return context


async def open_page(context: BrowserContext, discussion: str, query: str = "") -> Page:
    page = await context.new_page()
    await page.goto(f"/d/{discussion}{'?' + query if query else ''}")
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    await page.evaluate(STATUS_LOG)
    return page


async def states_seen(page: Page) -> list[str]:
    return [entry["state"] for entry in await page.evaluate("() => window.statusLog")]


# --- FR-035: idle -------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_an_idle_page_pauses_until_the_person_acts(
    browser: Browser, start_server: Callable[..., Server], transport: str
) -> None:
    server = start_server(PARLEY_HEARTBEAT_S=str(HEARTBEAT_S), PARLEY_IDLE_TIMEOUT_S="2")
    discussion = await make_discussion(server)
    context = await signed_in_at(browser, server.url, "Alice")
    page = await open_page(context, discussion, f"transport={transport}")
    await expect(page.locator("#status")).to_have_attribute("data-state", "paused", timeout=WAIT_MS)
    await expect(page.locator("#status-text")).to_contain_text("click or press a key to resume")
    await expect(page.locator("#connection-banner")).to_be_hidden()
    assert await settled_connections(server, 0) == 0
    await post(server, discussion, "Bob", "Said while Alice was away")
    # Several seconds, several idle timeouts: the page stays closed, and says nothing alarming.
    await page.wait_for_timeout(5000)
    assert await connections(server) == 0
    assert (await states_seen(page))[-1] == "paused"
    assert "reconnecting" not in await states_seen(page)
    await expect(response(page, "Said while Alice was away")).to_have_count(0)

    await page.mouse.click(500, 300)
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    await expect(response(page, "Said while Alice was away")).to_have_count(1, timeout=WAIT_MS)
    assert "reconnecting" not in await states_seen(page)


# --- FR-022: silent drops -----------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_a_silent_drop_is_noticed_and_resumed_through_a_fresh_connection(
    browser: Browser, server: Server, proxy: ControlledProxy, transport: str
) -> None:
    discussion = await make_discussion(server)
    context = await signed_in_at(browser, proxy.url, "Alice")
    page = await open_page(context, discussion, f"transport={transport}")
    assert len(proxy.streams(transport)) == 1
    await page.wait_for_timeout(500)

    dropped_at = proxy.blackhole_streams()  # no close, no reset, no offline event
    await post(server, discussion, "Bob", "Posted into the void")
    await expect(page.locator("#status")).not_to_have_attribute(
        "data-state", "connected", timeout=(DETECTION_BOUND_S + SLACK_S) * 1000
    )
    log = await page.evaluate("() => window.statusLog")
    noticed_at = next(entry["at"] for entry in log if entry["state"] != "connected") / 1000
    assert noticed_at - dropped_at <= DETECTION_BOUND_S + SLACK_S, log

    await expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    assert len(proxy.streams(transport)) == 2, "the page came back through a new connection"
    await expect(response(page, "Posted into the void")).to_have_count(1, timeout=WAIT_MS)
    await post(server, discussion, "Bob", "And after")
    await expect(response(page, "And after")).to_have_count(1, timeout=WAIT_MS)
    await expect(response(page, "Posted into the void")).to_have_count(1)


# --- FR-026: buffering proxies ------------------------------------------------------------------


@pytest.mark.parametrize(("refuse_ws", "expected"), [(False, "ws"), (True, "poll")])
async def test_a_buffering_proxy_forces_the_fallback(
    browser: Browser, server: Server, refuse_ws: bool, expected: str
) -> None:
    """SSE "opens" (headers pass) but no event ever arrives: after the first-event deadline
    (5 s) the page moves on to WebSocket, or, when the proxy refuses upgrades too, long-poll."""
    proxy = await ControlledProxy(server.port, buffer_sse=True, refuse_ws=refuse_ws).start()
    try:
        discussion = await make_discussion(server)
        context = await signed_in_at(browser, proxy.url, "Alice")
        page = await context.new_page()
        await page.goto(f"/d/{discussion}")
        await expect(page.locator("#status")).to_have_attribute("data-transport", expected, timeout=WAIT_MS)
        await expect(page.locator("#status")).to_have_attribute("data-state", "connected")
        assert proxy.streams("sse"), "SSE was tried first"
        await post(server, discussion, "Bob", f"Through the proxy on {expected}")
        await expect(response(page, f"Through the proxy on {expected}")).to_have_count(1, timeout=WAIT_MS)
    finally:
        await proxy.close()


# --- NFR-013: tokens ----------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["sse", "ws", "poll"])
async def test_a_token_is_refreshed_across_its_expiry_without_a_gap(
    browser: Browser, start_server: Callable[..., Server], transport: str
) -> None:
    """Tokens live 10 s: the page renews before expiry (SSE, WebSocket: the hello says when) or
    on `auth_expired` (long-poll), and every event posted around the expiries arrives once."""
    server = start_server(PARLEY_HEARTBEAT_S=str(HEARTBEAT_S), PARLEY_DEV_TOKEN_TTL_S="10")
    discussion = await make_discussion(server)
    context = await signed_in_at(browser, server.url, "Alice")
    page = await open_page(context, discussion, f"transport={transport}")
    bodies = [f"Point {i}" for i in range(24)]
    for body in bodies:  # 24 s: two expiries and more
        await post(server, discussion, "Bob", body)
        await asyncio.sleep(1)
    for body in bodies:
        await expect(response(page, body)).to_have_count(1, timeout=WAIT_MS)
    assert await page.locator("#thread .response .body").all_inner_texts() == bodies
    seen = await states_seen(page)
    assert not {"failed", "reconnecting", "offline"} & set(seen), seen
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected")


async def test_signing_out_in_one_tab_closes_the_stream_of_another(browser: Browser, server: Server) -> None:
    discussion = await make_discussion(server)
    context = await signed_in_at(browser, server.url, "Alice")
    holder = await open_page(context, discussion)  # the leader: it holds the connection
    await expect(holder.locator("#status")).to_have_attribute("data-transport", "ws", timeout=WAIT_MS)
    other = await open_page(context, discussion)
    assert await settled_connections(server, 1) == 1
    await other.click("#sign-out")
    await expect(holder.locator("#status")).to_have_attribute("data-state", "failed", timeout=WAIT_MS)
    await expect(holder.locator("#status-text")).to_have_text("Signed out")
    assert await settled_connections(server, 0) == 0
    await holder.wait_for_timeout(2000)  # and nobody reconnects
    assert await connections(server) == 0


# --- FR-024: the backoff schedule ---------------------------------------------------------------

RECORD_STATUSES = """() => {
  window.statuses = [];
  window.parleyClient.addEventListener('status', ({detail}) =>
    window.statuses.push({...detail, at: performance.now()}));
}"""


async def test_reconnection_follows_the_backoff_schedule(browser: Browser, server: Server) -> None:
    """The real schedule 1, 2, 4, 8, 16, 30, 30 ... s with ±20 % jitter, compressed by a factor
    of 10 (`?backoff=100&backoff_max=3000`): the delays announced and the delays that pass."""
    discussion = await make_discussion(server)
    context = await signed_in_at(browser, server.url, "Alice")
    page = await open_page(context, discussion, "backoff=100&backoff_max=3000")
    await page.evaluate(RECORD_STATUSES)
    await asyncio.to_thread(server.stop)
    await expect(page.locator("#status")).to_have_attribute("data-state", "failed", timeout=60_000)
    statuses: list[dict[str, Any]] = await page.evaluate("() => window.statuses")
    tries = [s for s in statuses if s["state"] == "reconnecting"]
    assert [s["attempt"] for s in tries] == list(range(1, 11))
    nominal = [min(3000, 100 * 2**n) for n in range(10)]  # 100, 200, 400, 800, 1600, 3000 ...
    announced = [s["retryInMs"] for s in tries]
    for delay, expected in zip(announced, nominal, strict=True):
        assert 0.8 * expected <= delay <= 1.2 * expected, (announced, nominal)
    assert announced != nominal, "jitter spreads the delays"
    # The delays really pass: each try starts after its delay (a failed try then takes a moment).
    ends = [s["at"] for s in tries[1:]] + [next(s["at"] for s in statuses if s["state"] == "failed")]
    for start, end, delay in zip([s["at"] for s in tries], ends, announced, strict=True):
        assert delay - 20 <= end - start <= delay + 3000, (start, end, delay)
    assert statuses[-1]["state"] == "failed" and statuses[-1]["attempt"] == 10


# --- FR-037: sleep and background ---------------------------------------------------------------

SET_VISIBILITY = """hidden => {
  Object.defineProperty(document, 'hidden', {value: hidden, configurable: true});
  Object.defineProperty(document, 'visibilityState', {value: hidden ? 'hidden' : 'visible', configurable: true});
  document.dispatchEvent(new Event('visibilitychange'));
}"""


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_a_hidden_then_frozen_page_resumes_without_loss(browser: Browser, server: Server, transport: str) -> None:
    """Hidden (the deadline pauses), then frozen like a sleeping device (the debugger halts its
    script: no timer, no handler runs; this headless Chromium ignores lifecycle freezing) for
    longer than the sleep gap (10 s); events posted meanwhile all show once on wake."""
    discussion = await make_discussion(server)
    context = await signed_in_at(browser, server.url, "Alice")
    page = await open_page(context, discussion, f"transport={transport}")
    cdp = await context.new_cdp_session(page)
    await cdp.send("Debugger.enable")
    await page.evaluate(SET_VISIBILITY, True)
    await page.evaluate("() => { window.ticks = 0; setInterval(() => window.ticks++, 1000); }")
    await cdp.send("Debugger.pause")
    bodies = [f"While asleep {i}" for i in range(6)]
    for body in bodies:
        await post(server, discussion, "Bob", body)
        await asyncio.sleep(2)
    await cdp.send("Debugger.resume")
    assert await page.evaluate("() => window.ticks") <= 3, "the page was frozen"
    await page.evaluate(SET_VISIBILITY, False)
    for body in bodies:
        await expect(response(page, body)).to_have_count(1, timeout=WAIT_MS)
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    await post(server, discussion, "Bob", "Awake again")
    await expect(response(page, "Awake again")).to_have_count(1, timeout=WAIT_MS)
    assert await page.locator("#thread .response .body").all_inner_texts() == [*bodies, "Awake again"]
    assert "failed" not in await states_seen(page)
