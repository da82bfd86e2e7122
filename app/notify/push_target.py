"""Where a Web Push may be sent: public addresses only (issue 11, item 5).

A subscription's endpoint is a URL any signed-in user chooses and the server then POSTs to, so
it must not reach the server's own network: loopback, private, link-local (cloud metadata at
169.254.169.254), shared (100.64/10), multicast, reserved and unspecified addresses are refused,
however they are spelled. The host is resolved (`getaddrinfo` reads `127.1`, `2130706433` and
`0x7f.1` as inet_aton does) and every address it gives is judged by the `ipaddress` module,
looking inside IPv4-mapped, 6to4 and Teredo IPv6 addresses for the IPv4 one they carry.

It is checked twice: when a subscription is stored (a clear 422), and at every connection the
sender opens (DNS may have changed since). The second check is the one that holds: the sender's
connections go through `PublicOnlyBackend`, which resolves the host itself, judges the
addresses and connects to the address it judged, so no later lookup can swap it (DNS
rebinding). TLS still verifies the certificate against the host name.

`PARLEY_PUSH_ALLOW_INSECURE=1` (tests only: their push service listens on loopback) turns the
address check off, along with the https requirement.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

RESOLVE_TIMEOUT_S = 5.0
# httpx's own pool defaults (httpx.Limits()).
MAX_CONNECTIONS = 100
MAX_KEEPALIVE_CONNECTIONS = 20
KEEPALIVE_EXPIRY_S = 5.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RefusedTarget(Exception):
    """The host is, or resolves to, an address the server must not connect to."""


class UnresolvableTarget(Exception):
    """The host does not resolve. `temporary` when DNS failed rather than said no."""

    def __init__(self, message: str, *, temporary: bool) -> None:
        super().__init__(message)
        self.temporary = temporary


def refusal(ip: IPAddress) -> str | None:
    """Why `ip` is not a public address a push service could have, or None if it is one."""
    candidates: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is a.b.c.d on a dual-stack socket
            candidates = [ip.ipv4_mapped]
        embedded = ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            candidates.append(embedded)
    for candidate in candidates:
        for reason in ("loopback", "private", "link_local", "multicast", "reserved", "unspecified"):
            if getattr(candidate, f"is_{reason}"):
                return reason.replace("_", "-")
        if not candidate.is_global:
            return "not public"
    return None


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (a literal is its own), each one judged: raises
    `RefusedTarget` if any is refused (a name with one private address among public ones is
    not a push service), `UnresolvableTarget` if there are none."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise UnresolvableTarget(f"resolving {host[:100]!r} timed out", temporary=True) from None
    except socket.gaierror as error:
        temporary = error.errno in (socket.EAI_AGAIN, getattr(socket, "EAI_SYSTEM", None))
        raise UnresolvableTarget(f"{host[:100]!r} does not resolve", temporary=temporary) from None
    except (UnicodeError, ValueError):  # not a valid host name (IDNA), or NUL
        raise UnresolvableTarget(f"{host[:100]!r} is not a host name", temporary=False) from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos))
    if not addresses:
        raise UnresolvableTarget(f"{host[:100]!r} does not resolve", temporary=False)
    for address in addresses:
        reason = refusal(address)
        if reason is not None:
            raise RefusedTarget(f"{host[:100]!r} is a {reason} address ({address})")
    return addresses


async def check_endpoint(endpoint: str) -> None:
    """The subscription-time check (the endpoint's scheme and shape are already valid)."""
    parts = urlsplit(endpoint)
    await resolve(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))


class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses `resolve` accepted."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve(host, port)
        # Each accepted address in turn, as a client trying a name's addresses would.
        for address in addresses[:-1]:
            with contextlib.suppress(httpcore.ConnectError, httpcore.ConnectTimeout):
                return await self._inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
        return await self._inner.connect_tcp(
            str(addresses[-1]), port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise RefusedTarget("push is never sent to a unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def push_client(timeout_s: float, *, allow_private: bool) -> httpx.AsyncClient:
    """The sender's HTTP client. Without `allow_private`, every connection it opens goes through
    `PublicOnlyBackend`. It ignores proxy environment variables: a proxy would make the address
    checked the proxy's, not the push service's."""
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    if not allow_private:
        # httpx takes no network backend, but its pool is httpcore's, which does: the same pool
        # httpx builds by default (TLS context included), with our backend.
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=MAX_CONNECTIONS,
            max_keepalive_connections=MAX_KEEPALIVE_CONNECTIONS,
            keepalive_expiry=KEEPALIVE_EXPIRY_S,
            network_backend=PublicOnlyBackend(),
        )
    return httpx.AsyncClient(transport=transport, timeout=timeout_s, trust_env=False)
