"""Web Push never reaches the server's own network (issue 11, item 5: SSRF).

Only loopback spellings and literal private/link-local addresses are used, and nothing here
connects anywhere but loopback: the refused addresses are refused before any connection.
"""

from __future__ import annotations

import contextlib
import ipaddress
import sqlite3
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.notify.push_target import RefusedTarget, push_client, refusal

from .push_service import Browser, PushService
from .support import Server, bearer, sign
from .test_notifications import respond, wait_until
from .test_stream import make_discussion

pytestmark = pytest.mark.slow

# Every spelling of an address of the server's own network that was accepted before.
REFUSED_HOSTS = [
    "127.0.0.1",
    "127.0.0.2",
    "127.1",
    "2130706433",  # 127.0.0.1 as one decimal number
    "0x7f.1",  # hex and a short form
    "017700000001",  # octal
    "localhost",
    "[::1]",
    "[::ffff:127.0.0.1]",  # IPv4-mapped IPv6
    "[::ffff:7f00:1]",
    "[2002:7f00:1::1]",  # 6to4 around 127.0.0.1
    "0.0.0.0",
    "[::]",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",  # shared address space (carrier-grade NAT)
    "169.254.169.254",  # cloud metadata
    "[fe80::1]",  # link-local
    "[fd00:ec2::254]",  # unique local (a cloud's IPv6 metadata)
    "224.0.0.1",  # multicast
    "[ff02::1]",
    "240.0.0.1",  # reserved
    "255.255.255.255",
]


@pytest.fixture
def push_service() -> Any:
    with PushService() as service:
        yield service


def subscription_count(server: Server) -> int:
    with contextlib.closing(sqlite3.connect(server.workdir / "parley.db")) as db:
        return int(db.execute("SELECT count(*) FROM push_subscriptions").fetchone()[0])


def push_states(server: Server) -> list[str]:
    with contextlib.closing(sqlite3.connect(server.workdir / "parley.db")) as db:
        return [row[0] for row in db.execute("SELECT push_state FROM notifications")]


def test_every_address_of_our_own_network_is_refused_and_public_ones_are_not() -> None:
    for address in ("127.0.0.2", "::ffff:127.0.0.1", "2002:7f00:1::1", "169.254.169.254", "fd00::1", "fe80::1"):
        assert refusal(ipaddress.ip_address(address)) is not None, address
    for address in ("142.250.1.1", "2a00:1450:4001::200e", "::ffff:8.8.8.8"):
        assert refusal(ipaddress.ip_address(address)) is None, address


async def test_subscribing_an_endpoint_on_our_own_network_is_refused(start_server: Callable[..., Server]) -> None:
    server = start_server()  # production defaults
    keys = Browser("https://unused.invalid/").subscription["keys"]
    async with httpx.AsyncClient(timeout=30) as client:
        for host in REFUSED_HOSTS:
            r = await client.post(
                server.url + "/api/push/subscriptions",
                json={"endpoint": f"https://{host}/push/x", "keys": keys},
                headers=bearer(sign("bob")),
            )
            assert r.status_code == 422, (host, r.text)
            assert r.json()["error"]["code"] == "invalid_field"
        # A name that does not resolve cannot be a push service either.
        r = await client.post(
            server.url + "/api/push/subscriptions",
            json={"endpoint": "https://push.example.invalid/x", "keys": keys},
            headers=bearer(sign("bob")),
        )
        assert r.status_code == 422, r.text
    assert subscription_count(server) == 0


async def test_a_stored_endpoint_is_checked_again_when_sending(
    start_server: Callable[..., Server], push_service: PushService, tmp_path: Any
) -> None:
    """A subscription stored when its host looked public (here: stored while loopback was
    allowed) is refused at send time: the sender never connects to it."""
    bob, carol = sign("bob"), sign("carol")
    browser = push_service.browser("bob-laptop")
    lenient = start_server(tmp_path, PARLEY_PUSH_ALLOW_INSECURE="1")
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(lenient.url + "/api/push/subscriptions", json=browser.subscription, headers=bearer(bob))
        assert r.status_code == 201, r.text
    lenient.stop()
    # The same database and keys, production defaults (http endpoints pass only the scheme check
    # at subscribe time, so this one is in the table as a stale record would be).
    strict = start_server(tmp_path)
    async with httpx.AsyncClient(timeout=10) as client:
        discussion = await make_discussion(client, strict, carol)
        await respond(client, strict, carol, discussion, "@bob are you there?")
        await wait_until(lambda: push_states(strict) == ["failed"], timeout_s=30)
    assert push_service.attempts.get("/push/bob-laptop") is None
    assert subscription_count(strict) == 1  # refused, not "gone": the row is not the service's to delete


async def test_the_push_client_connects_to_no_address_of_our_own(push_service: PushService) -> None:
    """The connection-time check itself, on a real listening loopback socket."""
    browser = push_service.browser("direct")
    port = browser.endpoint.split(":")[2].split("/")[0]
    async with push_client(5.0, allow_private=False) as client:
        for url in (browser.endpoint, f"http://localhost:{port}/push/direct", f"http://2130706433:{port}/push/direct"):
            with pytest.raises(RefusedTarget):
                await client.post(url, content=b"x")
    assert push_service.attempts.get("/push/direct") is None
    async with push_client(5.0, allow_private=True) as client:  # the tests-only setting
        r = await client.post(browser.endpoint, content=b"x")
    assert push_service.attempts.get("/push/direct") == 1
    assert r.status_code == 400  # not a real push message; it got there, which is the point
