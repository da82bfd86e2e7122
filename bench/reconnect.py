"""Measure the browser side's timings in real Chromium against a real server process.

    python bench/reconnect.py [--tries 10] [--restarts 10] [--transports auto,sse,ws,poll]

For each transport, `tries` times: drop the network (Playwright `set_offline`), post a response
from elsewhere, restore the network, and time
  - loss:      set_offline(True) called -> "Connection lost, reconnecting…" banner shown (FR-022, 3 s)
  - reconnect: network back (the page's `online` event) -> connected again (NFR-003, 5 s)
  - caught up: network back -> the response posted meanwhile is on screen (FR-025)
  - delivery:  a live post's HTTP request sent -> on screen in another browser (FR-001, 2 s)
then `restarts` times stops and starts the server process and times
  - restart:   server ready again -> page connected again, with the default backoff (NFR-010)
and how many server connections one user with three tabs holds (FR-036). Prints median and worst.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Page, async_playwright, expect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import Server, bearer, free_port, server_env, sign  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
WAIT_MS = 30_000

# Records, in page time, when the network came back and when the status next became connected.
PROBE = """
window.bench = {online: null, connected: null};
addEventListener('online', () => { window.bench.online = performance.now(); window.bench.connected = null; });
new MutationObserver(() => {
  const state = document.querySelector('#status').dataset.state;
  if (state === 'connected' && window.bench.online !== null && window.bench.connected === null) {
    window.bench.connected = performance.now();
  }
}).observe(document.querySelector('#status'), {attributes: true, attributeFilter: ['data-state']});
"""


def token(name: str) -> str:
    return sign(f"dev-{name.lower()}", name)


async def post(client: httpx.AsyncClient, server: Server, discussion: str, body: str) -> None:
    r = await client.post(
        f"{server.url}/api/discussions/{discussion}/responses", json={"body": body}, headers=bearer(token("Bob"))
    )
    r.raise_for_status()


async def appear_ms(page: Page, text: str) -> float:
    """Page time (performance.now) at which a response with this exact text is in the thread."""
    handle = await page.wait_for_function(
        """text => {
            const found = [...document.querySelectorAll('#thread .response:not(.pending) .body')]
              .some(el => el.textContent === text);
            return found ? performance.now() : null;
        }""",
        arg=text,
        polling=10,
        timeout=WAIT_MS,
    )
    return float(await handle.json_value())


def summary(values: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(values)), "worst_ms": round(max(values)), "n": len(values)}


async def connections(client: httpx.AsyncClient, server: Server) -> float:
    text = (await client.get(server.url + "/metrics")).text
    return sum(float(v) for v in re.findall(r'^parley_connections\{transport="\w+"\} ([0-9.]+)$', text, re.M))


# Records, in wall-clock ms, when the status last became connected.
RESTART_PROBE = """
window.connectedAt = null;
new MutationObserver(() => {
  if (document.querySelector('#status').dataset.state === 'connected') window.connectedAt = Date.now();
}).observe(document.querySelector('#status'), {attributes: true, attributeFilter: ['data-state']});
"""


async def measure_restarts(browser: Any, server: Server, client: httpx.AsyncClient, restarts: int) -> dict[str, float]:
    r = await client.post(server.url + "/api/discussions", json={"title": "restarts"}, headers=bearer(token("A")))
    discussion = r.json()["id"]
    context = await browser.new_context(base_url=server.url)
    await context.request.post("/api/dev/login", data={"name": "Restarts"})
    page = await context.new_page()
    await page.goto(f"/d/{discussion}")
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    await page.evaluate(RESTART_PROBE)
    took = []
    for _ in range(restarts):
        await asyncio.to_thread(server.stop)
        await expect(page.locator("#connection-banner")).to_be_visible(timeout=WAIT_MS)
        await asyncio.to_thread(server.start)
        ready_ms = time.time() * 1000
        await expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=60_000)
        took.append(max(0.0, await page.evaluate("window.connectedAt") - ready_ms))
    await context.close()
    return summary(took)


async def run(tries: int, restarts: int, transports: list[str], chromium: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        server = Server(port, server_env(Path(workdir), port, PARLEY_HEARTBEAT_S="2"), Path(workdir)).start()
        try:
            async with async_playwright() as playwright, httpx.AsyncClient() as client:
                browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                for transport in transports:
                    r = await client.post(
                        server.url + "/api/discussions",
                        json={"title": f"bench {transport}"},
                        headers=bearer(token("A")),
                    )
                    discussion = r.json()["id"]
                    reader = await browser.new_context(base_url=server.url)
                    await reader.request.post("/api/dev/login", data={"name": "Reader"})
                    page = await reader.new_page()
                    query = "" if transport == "auto" else f"?transport={transport}"
                    await page.goto(f"/d/{discussion}{query}")
                    await expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
                    await page.evaluate(PROBE)
                    loss, reconnect, caught_up, delivery = [], [], [], []
                    for i in range(tries):
                        await page.wait_for_timeout(300)
                        started = time.perf_counter()
                        await reader.set_offline(True)
                        await expect(page.locator("#connection-banner")).to_be_visible(timeout=WAIT_MS)
                        loss.append((time.perf_counter() - started) * 1000)
                        await post(client, server, discussion, f"missed {i}")
                        await reader.set_offline(False)
                        shown = await appear_ms(page, f"missed {i}")
                        await expect(page.locator("#status")).to_have_attribute(
                            "data-state", "connected", timeout=WAIT_MS
                        )
                        bench = await page.evaluate("window.bench")
                        reconnect.append(bench["connected"] - bench["online"])
                        caught_up.append(shown - bench["online"])
                        # Live delivery: page clock at request start vs. page clock on screen. Wait
                        # out the page's 500 ms render window first (FR-005 batches bursts), so this
                        # measures the path, not the batching.
                        await page.wait_for_timeout(600)
                        sent_at = await page.evaluate("performance.now()")
                        await post(client, server, discussion, f"live {i}")
                        delivery.append(await appear_ms(page, f"live {i}") - sent_at)
                    results[transport] = {
                        "loss_detected": summary(loss),
                        "reconnect_after_online": summary(reconnect),
                        "missed_shown_after_online": summary(caught_up),
                        "live_delivery": summary(delivery),
                    }
                    await reader.close()

                # One user, three tabs: how many connections does the server hold?
                r = await client.post(
                    server.url + "/api/discussions", json={"title": "tabs"}, headers=bearer(token("A"))
                )
                discussion = r.json()["id"]
                context = await browser.new_context(base_url=server.url)
                await context.request.post("/api/dev/login", data={"name": "Tabs"})
                tabs = []
                for _ in range(3):
                    tab = await context.new_page()
                    await tab.goto(f"/d/{discussion}")
                    await expect(tab.locator("#status")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
                    tabs.append(tab)
                await tabs[0].wait_for_timeout(2000)
                results["three_tabs_server_connections"] = await connections(client, server)
                await context.close()
                if restarts:
                    results["reconnect_after_server_restart"] = await measure_restarts(
                        browser, server, client, restarts
                    )
                await browser.close()
        finally:
            server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tries", type=int, default=10)
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--transports", default="auto,sse,ws,poll")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    results = asyncio.run(run(args.tries, args.restarts, args.transports.split(","), args.chromium))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
