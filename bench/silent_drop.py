"""Measure how fast the page notices a silent drop (FR-022), and the idle traffic per connection.

    python bench/silent_drop.py [--tries 10] [--heartbeat-s 2] [--transports sse,ws] [--idle-s 60]

A real server process, real Chromium, and between them `tests/proxy.py`'s TCP proxy on loopback.
For each transport, `tries` times, on one page that stays open: wait a random fraction of a
heartbeat (so the drop falls anywhere in the heartbeat cycle), blackhole the stream's connection
(no close, no reset, no `offline` event: a dead Wi-Fi, a NAT that forgot the flow), post a
response, and time
  - detection: blackhole -> the page's status leaves "connected" (bound: heartbeat_s + 3 s)
  - recovery:  blackhole -> connected again through a fresh proxy connection, with the response
               posted meanwhile on screen exactly once (no loss)
Then, with the default heartbeat (30 s), one idle page per transport for `idle_s` seconds:
the bytes its stream connection carried, both ways, per minute (SC-017: under 1 KB/min). These
are payload bytes (HTTP chunks, WebSocket frames); TCP/IP adds about 2 x 66 bytes per heartbeat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Browser, Page, async_playwright, expect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.proxy import ControlledProxy  # noqa: E402
from tests.support import Server, bearer, free_port, server_env, sign  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
WAIT_MS = 60_000
GRACE_S = 3.0  # parley.js HEARTBEAT_GRACE_MS

STATUS_LOG = """() => {
  window.statusLog = [];
  new MutationObserver(() => window.statusLog.push({
    state: document.querySelector('#status').dataset.state, at: Date.now(),
  })).observe(document.querySelector('#status'), {attributes: true, attributeFilter: ['data-state']});
}"""


def token(name: str) -> str:
    return sign(f"dev-{name.lower()}", name)


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered)),
        "p90_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]),
        "worst_ms": round(ordered[-1]),
        "n": len(ordered),
    }


async def discussion_for(client: httpx.AsyncClient, server: Server, title: str) -> str:
    r = await client.post(server.url + "/api/discussions", json={"title": title}, headers=bearer(token("Host")))
    r.raise_for_status()
    return str(r.json()["id"])


async def open_page(browser: Browser, proxy: ControlledProxy, discussion: str, transport: str) -> Page:
    context = await browser.new_context(base_url=proxy.url)
    await context.request.post("/api/dev/login", data={"name": "Reader"})
    page = await context.new_page()
    await page.goto(f"/d/{discussion}?transport={transport}")
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    return page


async def shown(page: Page, text: str) -> int:
    return await page.locator(
        "#thread .response:not(.pending) .body", has_text=re.compile(f"^{re.escape(text)}$")
    ).count()


async def measure_drops(
    browser: Browser, server: Server, client: httpx.AsyncClient, transport: str, tries: int, heartbeat_s: float
) -> dict[str, Any]:
    proxy = await ControlledProxy(server.port).start()
    try:
        discussion = await discussion_for(client, server, f"drops {transport}")
        page = await open_page(browser, proxy, discussion, transport)
        detection, recovery = [], []
        for i in range(tries):
            await page.evaluate(STATUS_LOG)
            await asyncio.sleep(random.uniform(0.2, heartbeat_s))
            streams_before = len(proxy.streams(transport))
            dropped_at = proxy.blackhole_streams()
            body = f"during drop {i}"
            r = await client.post(
                f"{server.url}/api/discussions/{discussion}/responses",
                json={"body": body},
                headers=bearer(token("Bob")),
            )
            r.raise_for_status()
            await expect(page.locator("#status")).not_to_have_attribute("data-state", "connected", timeout=WAIT_MS)
            await expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
            await expect(page.locator("#thread .response:not(.pending) .body", has_text=body)).to_have_count(
                1, timeout=WAIT_MS
            )
            log = await page.evaluate("() => window.statusLog")
            first_lost = next(n for n, entry in enumerate(log) if entry["state"] != "connected")
            back = next(entry for entry in log[first_lost:] if entry["state"] == "connected")
            detection.append(log[first_lost]["at"] - dropped_at * 1000)
            recovery.append(back["at"] - dropped_at * 1000)
            assert len(proxy.streams(transport)) > streams_before, "came back through a fresh connection"
            assert await shown(page, body) == 1, "exactly once"
        await page.context.close()
        return {
            "detection": summary(detection),
            "recovery_with_missed_event": summary(recovery),
            "bound_ms": round((heartbeat_s + GRACE_S) * 1000),
        }
    finally:
        await proxy.close()


async def measure_idle(browser: Browser, server: Server, client: httpx.AsyncClient, idle_s: float) -> dict[str, Any]:
    proxy = await ControlledProxy(server.port).start()
    try:
        pages = {}
        for transport in ("sse", "ws"):
            discussion = await discussion_for(client, server, f"idle {transport}")
            pages[transport] = await open_page(browser, proxy, discussion, transport)
        await asyncio.sleep(3)  # past the opening exchanges (hello, presence)
        start = {c: (c.bytes_down, c.bytes_up) for c in proxy.streams()}
        await asyncio.sleep(idle_s)
        result = {}
        for transport in ("sse", "ws"):
            live = [c for c in proxy.streams(transport) if c in start]
            down = sum(c.bytes_down - start[c][0] for c in live)
            up = sum(c.bytes_up - start[c][1] for c in live)
            result[transport] = {
                "connections": len(live),
                "bytes_down_per_min": round(down * 60 / idle_s),
                "bytes_up_per_min": round(up * 60 / idle_s),
            }
        for page in pages.values():
            await page.context.close()
        return result
    finally:
        await proxy.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"heartbeat_s": args.heartbeat_s, "grace_s": GRACE_S}
    async with async_playwright() as playwright, httpx.AsyncClient() as client:
        browser = await playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        with tempfile.TemporaryDirectory() as workdir:
            port = free_port()
            env = server_env(Path(workdir), port, PARLEY_HEARTBEAT_S=str(args.heartbeat_s))
            server = Server(port, env, Path(workdir)).start()
            try:
                for transport in args.transports.split(","):
                    results[transport] = await measure_drops(
                        browser, server, client, transport, args.tries, args.heartbeat_s
                    )
            finally:
                server.stop()
        if args.idle_s > 0:
            with tempfile.TemporaryDirectory() as workdir:
                port = free_port()
                server = Server(port, server_env(Path(workdir), port), Path(workdir)).start()  # default heartbeat
                try:
                    results["idle_traffic_default_heartbeat"] = await measure_idle(browser, server, client, args.idle_s)
                finally:
                    server.stop()
        await browser.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tries", type=int, default=10)
    parser.add_argument("--heartbeat-s", type=float, default=2.0)
    parser.add_argument("--transports", default="sse,ws")
    parser.add_argument("--idle-s", type=float, default=60.0, help="0 skips the idle traffic measurement")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    started = time.monotonic()
    results = asyncio.run(run(args))
    results["took_s"] = round(time.monotonic() - started)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
