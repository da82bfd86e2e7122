"""The page's common ground panel, broadcast banners and discussion lists, in real Chromium
against real server processes (issue 10), and its layout at desktop and phone width (issue 12).

Analysis documents come two ways: through the server's own analyzer (stance-bearing responses),
and through `POST .../analysis` with an `analyzer` token, which publishes exactly the figures a
test chooses, so an animation from one known value to another can be watched frame by frame.

Screenshots are saved under `test-artifacts/` at the repository root (or `$PARLEY_TEST_ARTIFACTS`).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from .support import ROOT, Server, bearer, sign
from .test_browser import WAIT_MS, as_user, open_discussion, signed_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = Path(os.environ.get("PARLEY_TEST_ARTIFACTS") or ROOT / "test-artifacts")
ANALYZER = sign("analyzer-service", "Analyzer", roles=["analyzer"])
ADMIN = sign("ops", "Ops", roles=["admin"])


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    return start_server(PARLEY_HEARTBEAT_S="2")


# --- REST helpers ------------------------------------------------------------------------------


async def call(server: Server, method: str, path: str, token: str, body: Any = None, expected: int = 200) -> Any:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        r = await client.request(method, path, json=body, headers=bearer(token))
    assert r.status_code == expected, r.text
    return r.json()


async def discussion_with(server: Server, title: str, propositions: list[str], **fields: Any) -> tuple[str, list[str]]:
    discussion = await call(server, "POST", "/api/discussions", as_user("Host"), {"title": title, **fields}, 201)
    ids = []
    for text in propositions:
        made = await call(
            server, "POST", f"/api/discussions/{discussion['id']}/propositions", as_user("Host"), {"text": text}, 201
        )
        ids.append(made["id"])
    return discussion["id"], ids


QUIET_S = 2.0


async def settled_analysis(server: Server, discussion: str, propositions: list[str]) -> dict[str, Any]:
    """The analysis once the server's analyzer has counted every proposition and gone quiet
    (no new version for QUIET_S), so a document a test publishes next is not overtaken by a
    late recomputation."""
    deadline = time.monotonic() + 3 * WAIT_MS / 1000
    last: dict[str, Any] | None = None
    since = time.monotonic()
    while time.monotonic() < deadline:
        current = await call(server, "GET", f"/api/discussions/{discussion}/analysis", as_user("Host"))
        if last is None or last["version"] != current["version"]:
            since = time.monotonic()
        last = current
        listed = {p["id"] for p in current["propositions"]}
        if set(propositions) <= listed and time.monotonic() - since >= QUIET_S:
            return current
        await asyncio.sleep(0.25)
    raise AssertionError(f"the analysis never settled: {last}")


def figures(pid: str, agree: int, disagree: int, passed: int) -> dict[str, Any]:
    voted = agree + disagree
    return {
        "id": pid,
        "agree": agree,
        "disagree": disagree,
        "pass": passed,
        "agreement": agree / voted if voted else None,
    }


async def publish(
    server: Server,
    discussion: str,
    participants: int,
    rows: list[dict[str, Any]],
    common: list[str],
    divisive: list[str],
) -> dict[str, Any]:
    """An analysis document from the external analyzer, as the server stored and pushed it."""
    body = {"participants": participants, "propositions": rows, "common_ground": common, "divisive": divisive}
    return dict(await call(server, "POST", f"/api/discussions/{discussion}/analysis", ANALYZER, body, 201))


# --- page helpers ------------------------------------------------------------------------------


def proposition(page: Page, pid: str) -> Any:
    return page.locator(f"#common-ground .proposition[data-id='{pid}']")


def agree_count(page: Page, pid: str) -> Any:
    return proposition(page, pid).locator(".count.agree .value")


async def shown_version(page: Page, version: int) -> None:
    await expect(page.locator("#common-ground")).to_have_attribute("data-version", str(version), timeout=WAIT_MS)


SAMPLE = """([pid, limit]) => {
  const item = document.querySelector(`#common-ground .proposition[data-id='${pid}']`);
  const count = item.querySelector('.count.agree .value');
  const bar = item.querySelector('.agreement-bar');
  window.__sampled = { item, count, bar };
  window.__samples = [];
  const tick = () => {
    window.__samples.push({ count: count.textContent, width: bar.getBoundingClientRect().width });
    if (window.__samples.length < limit) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}"""
"""Record, every frame (up to `limit` frames), one proposition's shown agree count and bar width."""


async def start_sampling(page: Page, pid: str, limit: int = 1200) -> None:
    await page.evaluate(SAMPLE, [pid, limit])


async def samples(page: Page) -> list[dict[str, Any]]:
    return list(await page.evaluate("window.__samples"))


async def same_elements(page: Page, pid: str) -> bool:
    """The elements sampled are still the ones in the page (updated, not re-rendered)."""
    return bool(
        await page.evaluate(
            """(pid) => {
              const item = document.querySelector(`#common-ground .proposition[data-id='${pid}']`);
              const s = window.__sampled;
              return s.item === item && s.count === item.querySelector('.count.agree .value')
                && s.bar === item.querySelector('.agreement-bar');
            }""",
            pid,
        )
    )


def assert_tweened(seen: list[dict[str, Any]], start: int, end: int) -> None:
    counts = [int(sample["count"]) for sample in seen]
    assert counts[0] == start and counts[-1] == end, counts
    between = [count for count in counts if min(start, end) < count < max(start, end)]
    assert between, f"no intermediate count between {start} and {end}: {counts}"
    assert counts == sorted(counts, reverse=start > end), f"the count did not move one way: {counts}"
    widths = [sample["width"] for sample in seen]
    low, high = sorted((widths[0], widths[-1]))
    assert high - low > 10, widths
    assert any(low + 1 < width < high - 1 for width in widths), f"the bar jumped: {widths}"


# --- the common ground panel -----------------------------------------------------------------


async def test_new_numbers_move_into_place_on_the_same_elements(browser: Browser, server: Server) -> None:
    discussion, (safer, parking) = await discussion_with(
        server, "Protected bike lanes on Main Street?", ["Bike lanes make streets safer", "Shops need parking"]
    )
    settled = await settled_analysis(server, discussion, [safer, parking])
    page = await open_discussion(await signed_in(browser, server, "Alice"), discussion)
    await shown_version(page, settled["version"])
    await expect(proposition(page, safer).locator(".proposition-text")).to_have_text("Bike lanes make streets safer")
    await expect(agree_count(page, safer)).to_have_text("0")

    await start_sampling(page, safer)
    document = await publish(
        server, discussion, 48, [figures(safer, 40, 10, 5), figures(parking, 3, 30, 2)], [safer], [parking]
    )
    await shown_version(page, document["version"])
    await expect(agree_count(page, safer)).to_have_text("40", timeout=WAIT_MS)
    await page.wait_for_function("() => window.__samples.at(-1).count === '40'")  # the last frames sampled too
    assert_tweened(await samples(page), 0, 40)
    assert await same_elements(page, safer)

    item = proposition(page, safer)
    await expect(item).to_have_attribute("data-kind", "common")
    await expect(item.locator(".proposition-tag")).to_have_text("Common ground")
    await expect(item.locator(".agreement-value")).to_have_text("80%")
    await expect(proposition(page, parking)).to_have_attribute("data-kind", "divisive")
    await expect(page.locator("#common-ground .cg-participants")).to_have_text("48")
    await expect(page.locator("#common-ground .cg-common-count")).to_have_text("1")
    meter = item.locator(".agreement-meter")
    bar = item.locator(".agreement-bar")
    ratio = await bar.evaluate("b => b.getBoundingClientRect().width") / await meter.evaluate(
        "m => m.getBoundingClientRect().width"
    )
    assert abs(ratio - 0.8) < 0.02


async def test_stances_sent_with_a_response_move_the_counts_after_a_refreshing_mark(
    browser: Browser, server: Server
) -> None:
    discussion, (safer, parking) = await discussion_with(
        server, "Protected bike lanes on Main Street?", ["Bike lanes make streets safer", "Shops need parking"]
    )
    settled = await settled_analysis(server, discussion, [safer, parking])
    page = await open_discussion(await signed_in(browser, server, "Alice"), discussion)
    await shown_version(page, settled["version"])
    # Remember whether the refreshing mark ever showed: it may show only for a moment.
    await page.evaluate(
        """() => {
          const mark = document.querySelector('#common-ground .cg-refreshing');
          window.__refreshingSeen = [];
          new MutationObserver(() => window.__refreshingSeen.push(mark.hidden))
            .observe(mark, { attributes: true, attributeFilter: ['hidden'] });
        }"""
    )

    # Alice takes her stances in the panel; they ride on her next response.
    await proposition(page, safer).locator(".stance.agree").click()
    await proposition(page, parking).locator(".stance.disagree").click()
    await expect(proposition(page, safer).locator(".stance.agree")).to_have_attribute("aria-pressed", "true")
    await expect(page.locator("#stance-draft")).to_contain_text("2 stances will be sent with your response")
    await page.fill("#composer textarea", "Safer streets matter more than parking.")
    await page.click("#composer button")
    await expect(page.locator("#stance-draft")).to_be_hidden()
    await expect(agree_count(page, safer)).to_have_text("1", timeout=WAIT_MS)
    await expect(proposition(page, parking).locator(".count.disagree .value")).to_have_text("1", timeout=WAIT_MS)
    # The stances are stored with the response; the buttons now show what Alice holds.
    stored = await call(server, "GET", f"/api/discussions/{discussion}/responses", as_user("Host"))
    assert stored["responses"][-1]["stances"] == {safer: "agree", parking: "disagree"}
    await expect(proposition(page, safer).locator(".stance.agree")).to_have_class(re.compile(r"\brecorded\b"))

    # Bob's response (through the API) changes the counts on Alice's page too.
    await page.mouse.move(5, 5)
    await call(
        server, "POST", f"/api/discussions/{discussion}/responses", as_user("Bob"),
        {"body": "Parking first.", "stances": {safer: "disagree", parking: "agree"}}, 201,
    )  # fmt: skip
    await expect(proposition(page, safer).locator(".count.disagree .value")).to_have_text("1", timeout=WAIT_MS)
    await expect(proposition(page, safer).locator(".agreement-value")).to_have_text("50%")
    seen = await page.evaluate("window.__refreshingSeen")
    assert False in seen, "the refreshing mark never showed"
    await expect(page.locator("#common-ground .cg-refreshing")).to_be_hidden()


async def test_an_update_waits_behind_the_pill_while_the_reader_uses_the_panel(
    browser: Browser, server: Server
) -> None:
    discussion, (safer, parking) = await discussion_with(
        server, "Protected bike lanes on Main Street?", ["Bike lanes make streets safer", "Shops need parking"]
    )
    await settled_analysis(server, discussion, [safer, parking])
    page = await open_discussion(await signed_in(browser, server, "Alice"), discussion)

    async def update(agree: int) -> dict[str, Any]:
        return await publish(
            server, discussion, agree + 5, [figures(safer, agree, 5, 0), figures(parking, 1, 1, 0)], [], []
        )

    first = await update(10)
    await shown_version(page, first["version"])
    await expect(agree_count(page, safer)).to_have_text("10")

    # Pointer over the panel: the update is held behind the pill; the numbers stay.
    await page.hover("#common-ground .cg-summary")
    await start_sampling(page, safer)
    second = await update(30)
    pill = page.locator("#common-ground .cg-pill")
    await expect(pill).to_be_visible(timeout=WAIT_MS)
    await expect(pill).to_have_text("Analysis updated — show")
    held_from = len(await samples(page))
    # Long enough for the animation to have run had the update been applied (0.9 s).
    await page.wait_for_function(f"() => window.__samples.length >= {held_from + 90}")
    assert {sample["count"] for sample in await samples(page)} == {"10"}
    await expect(page.locator("#common-ground")).to_have_attribute("data-version", str(first["version"]))

    # "Show": the held update moves into place, on the same elements.
    await start_sampling(page, safer)
    await pill.click()
    await expect(pill).to_be_hidden()
    await shown_version(page, second["version"])
    await expect(agree_count(page, safer)).to_have_text("30")
    await page.wait_for_function("() => window.__samples.at(-1).count === '30'")
    assert_tweened(await samples(page), 10, 30)
    assert await same_elements(page, safer)

    # The interaction ending applies it too: the pointer leaves the panel.
    await page.hover("#common-ground .cg-summary")
    third = await update(50)
    await expect(pill).to_be_visible(timeout=WAIT_MS)
    await expect(agree_count(page, safer)).to_have_text("30")
    await page.hover("#thread")
    await shown_version(page, third["version"])
    await expect(agree_count(page, safer)).to_have_text("50", timeout=WAIT_MS)
    await expect(pill).to_be_hidden()

    # Focus inside the panel holds updates as well, until it leaves.
    await page.click("#new-proposition input")
    await page.hover("#thread")
    fourth = await update(60)
    await expect(pill).to_be_visible(timeout=WAIT_MS)
    await expect(agree_count(page, safer)).to_have_text("50")
    await page.click("#composer textarea")
    await shown_version(page, fourth["version"])
    await expect(agree_count(page, safer)).to_have_text("60", timeout=WAIT_MS)

    # A scroll inside the panel holds an update too; a while after the last scroll it goes in.
    await page.set_viewport_size({"width": 1100, "height": 420})
    body = page.locator("#cg-body")
    await page.wait_for_function("(b) => b.scrollHeight > b.clientHeight", arg=await body.element_handle())
    # The reader keeps scrolling (every 300 ms) until the update has arrived, then stops.
    await body.evaluate(
        """b => { const scroll = () => { b.scrollTop = b.scrollTop ? 0 : 40; };
                  scroll(); window.__scroller = setInterval(scroll, 300); }"""
    )
    fifth = await update(70)
    await expect(pill).to_be_visible(timeout=WAIT_MS)
    await expect(agree_count(page, safer)).to_have_text("60")
    await page.evaluate("clearInterval(window.__scroller)")
    await shown_version(page, fifth["version"])
    await expect(agree_count(page, safer)).to_have_text("70", timeout=WAIT_MS)
    await expect(pill).to_be_hidden()


async def test_a_proposition_added_in_one_browser_appears_in_another(browser: Browser, server: Server) -> None:
    discussion, _ = await discussion_with(server, "Four-day work week?", [])
    alice = await open_discussion(await signed_in(browser, server, "Alice"), discussion)
    bob = await open_discussion(await signed_in(browser, server, "Bob"), discussion)
    await expect(bob.locator("#common-ground .cg-empty")).to_be_visible()
    await alice.fill("#new-proposition input", "Productivity holds up")
    await alice.click("#new-proposition button")
    for page in (alice, bob):
        item = page.locator("#common-ground .proposition", has_text="Productivity holds up")
        await expect(item).to_have_count(1, timeout=WAIT_MS)
        await expect(item.locator(".count.agree .value")).to_have_text("0")
        await expect(page.locator("#common-ground .cg-empty")).to_be_hidden()
    await expect(alice.locator("#new-proposition input")).to_have_value("")


# --- broadcasts ----------------------------------------------------------------------------


async def broadcast(server: Server, message: str, level: str) -> dict[str, Any]:
    return dict(await call(server, "POST", "/api/broadcasts", ADMIN, {"message": message, "level": level}, 201))


def banner(page: Page, message: str) -> Any:
    return page.locator("#broadcasts .broadcast", has_text=message)


async def test_broadcasts_show_as_banners_on_every_transport(browser: Browser, server: Server) -> None:
    discussion, _ = await discussion_with(server, "Parks or parking?", [])
    pages = []
    for name, transport in (("Alice", "sse"), ("Bob", "ws"), ("Carol", "poll")):
        context = await signed_in(browser, server, name)
        pages.append(await open_discussion(context, discussion, transport=transport, broadcast_hide="1500"))
    alice = pages[0]
    await expect(alice.locator("#status")).to_have_attribute("data-transport", "sse")

    # Each page notes every banner it shows (the info one hides again by itself soon).
    for page in pages:
        await page.evaluate(
            """() => { window.__banners = [];
                 new MutationObserver((changes) => { for (const change of changes) for (const node of change.addedNodes)
                   window.__banners.push([node.dataset.level, node.textContent]); })
                 .observe(document.querySelector('#broadcasts'), { childList: true }); }"""
        )
    await broadcast(server, "Maintenance at 22:00 UTC", "info")
    await broadcast(server, "Posting is paused: incident in progress", "critical")
    for page in pages:
        await page.wait_for_function("() => window.__banners.length >= 2", timeout=WAIT_MS)
        assert await page.evaluate("window.__banners") == [
            ["info", "Maintenance at 22:00 UTC"],
            ["critical", "Posting is paused: incident in progress"],
        ]
    # Info hides by itself; critical outlives it and stays until dismissed.
    for page in pages:
        await expect(banner(page, "Maintenance at 22:00 UTC")).to_have_count(0, timeout=WAIT_MS)
        await expect(banner(page, "Posting is paused")).to_be_visible()

    # Broadcasts are stored: a reload shows the critical one again (not yet dismissed), not the
    # info one (already seen) ...
    await alice.reload()
    await expect(banner(alice, "Posting is paused")).to_be_visible(timeout=WAIT_MS)
    await expect(banner(alice, "Maintenance at 22:00 UTC")).to_have_count(0)
    await banner(alice, "Posting is paused").get_by_role("button", name="Dismiss").click()
    await expect(banner(alice, "Posting is paused")).to_have_count(0)
    # ... and once dismissed it is seen: not shown again.
    await alice.reload()
    await expect(alice.locator("body")).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
    await expect(alice.locator("#status")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    await expect(banner(alice, "Posting is paused")).to_have_count(0)


async def test_a_newcomer_sees_an_active_broadcast_once(browser: Browser, server: Server) -> None:
    await broadcast(server, "Welcome to the new Parley", "warning")
    context = await signed_in(browser, server, "Dana")
    page = await context.new_page()
    await page.goto("/?broadcast_hide=60000")
    await expect(banner(page, "Welcome to the new Parley")).to_have_attribute("data-level", "warning", timeout=WAIT_MS)
    await banner(page, "Welcome to the new Parley").get_by_role("button", name="Dismiss").click()
    await page.reload()
    await expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    await expect(banner(page, "Welcome to the new Parley")).to_have_count(0)


# --- discovery -------------------------------------------------------------------------------


async def test_the_sidebar_lists_public_discussions_and_yours_made_through_the_api(
    browser: Browser, server: Server
) -> None:
    public = await call(server, "POST", "/api/discussions", as_user("Host"), {"title": "Parks or parking?"}, 201)
    await call(server, "POST", f"/api/discussions/{public['id']}/responses", as_user("Bob"), {"body": "Parks."}, 201)
    private = await call(
        server, "POST", "/api/discussions", as_user("Host"), {"title": "Board only", "visibility": "private"}, 201
    )
    mine = await call(server, "POST", "/api/discussions", as_user("Alice"), {"title": "Alice asks: trams?"}, 201)
    context = await signed_in(browser, server, "Alice")
    page = await context.new_page()
    await page.goto("/")
    await expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=WAIT_MS)

    listed = page.locator("#public-discussions li", has_text="Parks or parking?")
    await expect(listed).to_have_count(1, timeout=WAIT_MS)
    await expect(listed.locator(".discussion-meta")).to_have_text("1 participant")
    await expect(page.locator("#public-discussions li", has_text="Board only")).to_have_count(0)
    await expect(page.locator("#discussions li", has_text="Alice asks: trams?")).to_have_count(1)
    await expect(page.locator("#discussions-empty")).to_be_hidden()
    assert private["id"] and mine["id"]

    # Responding makes a discussion hers too.
    await listed.locator("a").click()
    await page.wait_for_url(f"**/d/{public['id']}")
    await expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
    await page.fill("#composer textarea", "Parks, with a few loading bays.")
    await page.click("#composer button")
    await expect(
        page.locator("#thread .response:not(.pending) .body", has_text="Parks, with a few loading bays.")
    ).to_have_count(1, timeout=WAIT_MS)
    await page.goto("/")
    await expect(page.locator("#discussions li", has_text="Parks or parking?")).to_have_count(1, timeout=WAIT_MS)
    await expect(
        page.locator("#public-discussions li", has_text="Parks or parking?").locator(".discussion-meta")
    ).to_have_text("2 participants")


# --- layout (issue 12, item 7) -----------------------------------------------------------------


async def test_the_page_at_desktop_and_phone_width(browser: Browser, server: Server) -> None:
    """Screenshots at 1280 and 390 px (saved as artifacts), and the layout faults of issue 12:
    the bell is an SVG, the typing line has the thread's padding, and at 390 px the title does
    not wrap word by word, the top bar stays one row and nothing scrolls sideways."""
    title = "Should our town replace street parking with protected bike lanes?"
    discussion, ids = await discussion_with(
        server,
        title,
        ["Bike lanes make streets safer", "Shops lose customers without parking", "Try it on one street first"],
    )
    # Safer streets: common ground (3 of 4 agree); parking: divisive (2 against 2); trial: neither.
    positions = {
        "Ana": ("agree", "agree", "agree"),
        "Ben": ("agree", "disagree", "pass"),
        "Chloe": ("agree", "disagree", "agree"),
        "Dev": ("disagree", "agree", "disagree"),
    }
    for name, position in positions.items():
        stances = dict(zip(ids, position, strict=True))
        await call(
            server, "POST", f"/api/discussions/{discussion}/responses", as_user(name),
            {"body": f"{name} here: one reason, and another one worth writing down.", "stances": stances}, 201,
        )  # fmt: skip
    await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
    for width, height in ((1280, 800), (390, 844)):
        context = await signed_in(browser, server, "Alice", viewport={"width": width, "height": height})
        page = await open_discussion(context, discussion)
        # Only the final count makes the parking proposition divisive (2 against 2).
        await expect(proposition(page, ids[0])).to_have_attribute("data-kind", "common", timeout=WAIT_MS)
        await expect(proposition(page, ids[1])).to_have_attribute("data-kind", "divisive", timeout=WAIT_MS)
        await expect(page.locator("#bell svg")).to_be_visible()
        await page.wait_for_timeout(1000)  # entry animations finish before the picture
        path = ARTIFACTS / f"discussion-{width}.png"
        await page.screenshot(path=str(path))
        print(f"screenshot: {path}")

        padding = await page.evaluate(
            """() => ['#typing-line', '#thread', '.composer'].map(
                 (s) => parseFloat(getComputedStyle(document.querySelector(s)).paddingLeft))"""
        )
        assert padding[0] == padding[1] == padding[2] > 0, padding
        assert await page.evaluate("document.documentElement.scrollWidth") <= width
        topbar = await page.locator(".topbar").bounding_box()
        assert topbar is not None and topbar["height"] < 64, topbar
        lines = await page.locator("#title").evaluate(
            """h => { const r = document.createRange(); r.selectNodeContents(h);
                      return new Set([...r.getClientRects()].map((rect) => Math.round(rect.top))).size; }"""
        )
        assert lines <= 3, f"the title takes {lines} lines"  # not one word per line
        if width < 1000:
            await page.click("#cg-toggle")
            await expect(proposition(page, ids[0])).to_be_visible()
            await page.wait_for_timeout(600)  # the tags' entry animation
            path = ARTIFACTS / f"discussion-{width}-analysis.png"
            await page.screenshot(path=str(path))
            print(f"screenshot: {path}")
        await page.goto("/")
        await expect(page.locator("#public-discussions li", has_text=title)).to_have_count(1, timeout=WAIT_MS)
        path = ARTIFACTS / f"home-{width}.png"
        await page.screenshot(path=str(path))
        print(f"screenshot: {path}")
        await context.close()


async def test_after_sync_required_the_panel_reloads_the_analysis(
    browser: Browser, start_server: Callable[..., Server]
) -> None:
    """The embedded log restarts with a new epoch: the page gets `sync_required` and reads the
    analysis again over REST, so an update published meanwhile still reaches the panel."""
    server = start_server(PARLEY_HEARTBEAT_S="2")
    discussion, (safer,) = await discussion_with(server, "Trams or buses?", ["Trams are worth the cost"])
    settled = await settled_analysis(server, discussion, [safer])
    page = await open_discussion(await signed_in(browser, server, "Alice"), discussion, backoff="2000")
    await shown_version(page, settled["version"])
    reads: list[str] = []
    page.on("request", lambda request: reads.append(request.url) if request.url.endswith("/analysis") else None)

    await asyncio.to_thread(server.stop)
    await expect(page.locator("#connection-banner")).to_be_visible(timeout=WAIT_MS)
    await asyncio.to_thread(server.start)
    document = await publish(server, discussion, 7, [figures(safer, 6, 1, 0)], [safer], [])
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    await shown_version(page, document["version"])
    await expect(agree_count(page, safer)).to_have_text("6", timeout=WAIT_MS)
    assert reads, "the page never read the analysis again after sync_required"
