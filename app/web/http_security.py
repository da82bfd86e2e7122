"""The browser-facing edge of every HTTP request (issue 11, item 4).

- Cross-site request forgery: a state-changing request (POST, PUT, PATCH, DELETE) that does not
  carry `Authorization: Bearer` is one a browser may have made with the `parley_token` cookie on
  another site's behalf, so it must come from our own pages. `Sec-Fetch-Site: same-origin` (or
  `none`, a user's own action) passes; otherwise the `Origin` must be this host or one listed
  in `PARLEY_ALLOWED_ORIGINS` (listed by name: `*` opens WebSockets to any origin, never
  cookie-authenticated writes). A request with neither header is not from a browser (curl, a
  service), and a browser always sends `Origin` on these methods. Bearer requests are not
  forgeable: a page cannot set that header on another origin without CORS, which we never
  grant. SameSite=Lax alone does not cover sibling subdomains or other ports (same *site*).
- A request body must be `application/json` (415 otherwise): a text/plain or form body is what
  an HTML form or a "simple" cross-origin fetch can send without a preflight.
- Every response says `nosniff`, may not be framed (`frame-ancestors 'none'`, and
  `X-Frame-Options: DENY` for old browsers), and carries a Content Security Policy that allows
  only our own scripts, styles and connections (the page has no inline script or style).
- Behind a TLS-terminating proxy the app sees plain http, so the `parley_token` cookie would
  lose `Secure`. `ForwardedHeaders` believes `X-Forwarded-Proto`/`-For`/`-Host` from the peers in
  `PARLEY_TRUSTED_PROXIES` only, and rewrites the ASGI scope before Quart reads it.

401s carry `WWW-Authenticate: Bearer` through `errors.Unauthorized.headers()`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from quart import Quart, Response, request
from werkzeug.datastructures import Headers

from app.auth import bearer_token
from app.errors import Forbidden, UnsupportedMediaType
from app.settings import Settings
from app.web.request_hooks import AfterRequest, BeforeRequest

STATE_CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "img-src 'self' data:",  # the page's icon is `data:,`
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)


def policy_with_inline_style(css: str) -> str:
    """The policy, also allowing one inline `<style>` of exactly this text (by its hash), for a
    page that must be self-contained (`/docs`)."""
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    return f"{CONTENT_SECURITY_POLICY}; style-src 'self' 'sha256-{digest}'"


SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Discussion ids are in page URLs; other sites need not learn them.
    "Referrer-Policy": "same-origin",
}
# The same, as (lower-case name, name, value) for `add_security_headers`.
_SECURITY_ITEMS = tuple((name.lower(), name, value) for name, value in SECURITY_HEADERS.items())
# Sec-Fetch-Site values a browser sets only for a request our own origin (or the user) made.
OWN_FETCH_SITES = frozenset({"same-origin", "none"})


def _normal_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def cross_site_refusal(
    method: str, headers: Mapping[str, str] | Headers, host: str | None, allowed_origins: Iterable[str]
) -> str | None:
    """Why this request may be a forgery, or None when it may go on."""
    if method not in STATE_CHANGING_METHODS or bearer_token(headers) is not None:
        return None
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site.strip().lower() in OWN_FETCH_SITES:
        return None
    origin = headers.get("Origin")
    if origin is None:
        # No Origin but a Sec-Fetch-Site that is not our own: a browser, cross-site.
        return None if site is None else f"a {site} request without an Origin"
    normal = _normal_origin(origin)
    if normal in {_normal_origin(a) for a in allowed_origins if a != "*"}:
        return None
    # Only a browser without Fetch Metadata gets here with our own origin. The scheme is not
    # compared: behind a proxy whose headers we do not trust the app sees http for an https page.
    netloc = urlsplit(normal).netloc
    if site is None and netloc and host is not None and netloc == host.strip().lower():
        return None
    return f"requests from {origin[:100]!r} may not change anything here"


def _has_body() -> bool:
    length = request.content_length
    return (length is not None and length > 0) or "Transfer-Encoding" in request.headers


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def install(app: Quart, settings: Settings) -> tuple[BeforeRequest, AfterRequest]:
    """Wrap the ASGI scope (forwarded headers); returns the checks for before every request and
    after every response, for the app to run (`app.web.request_hooks`)."""
    allowed = settings.allowed_origins

    async def refuse_forgeries_and_non_json() -> None:
        method = request.method
        if method not in STATE_CHANGING_METHODS:
            return  # nothing to forge, no body to type (and `request.host` is not worked out)
        why = cross_site_refusal(method, request.headers, request.host, allowed)
        if why is not None:
            raise Forbidden(why, code="cross_site_request")
        if _has_body() and not _is_json(request.mimetype):
            raise UnsupportedMediaType("send the body as Content-Type: application/json")

    async def add_security_headers(response: Response) -> Response:
        # One pass over the names already set, instead of `setdefault` per header: werkzeug's
        # `name in headers` costs ~2 us each, and these four were ~4 % of a GET (issue 13).
        headers = response.headers
        present = {name.lower() for name, _ in headers.items()}
        for lower, name, value in _SECURITY_ITEMS:
            if lower not in present:
                headers.add(name, value)
        if _has_body():
            # An answer given before the body was read (a refusal, a 401 or 404 found first)
            # makes Hypercorn close the connection without saying so, and a client that
            # reuses it gets a reset instead of its next answer. Read the rest (size-capped).
            with contextlib.suppress(Exception):
                await request.get_data(cache=False)
        return response

    if settings.trusted_proxies:
        app.asgi_app = ForwardedHeaders(app.asgi_app, settings.trusted_proxies)  # type: ignore[method-assign]
    return refuse_forgeries_and_non_json, add_security_headers


class ForwardedHeaders:
    """ASGI middleware: believe `X-Forwarded-Proto`, `-For` and `-Host` from trusted peers only.

    Proxies append to these headers, and a client can send its own: the value that counts is the
    one the nearest trusted proxy added (the last), and the client address is the rightmost one
    in `X-Forwarded-For` that is not itself a trusted proxy. hypercorn's ProxyFixMiddleware
    trusts a number of hops from any peer; this checks who the peer is.
    """

    def __init__(self, app: Any, trusted: Iterable[str]) -> None:
        self._app = app
        specs = tuple(trusted)
        self._any = "*" in specs
        self._networks = tuple(ipaddress.ip_network(s, strict=False) for s in specs if s != "*")

    def trusts(self, peer: str | None) -> bool:
        return self._any or self._listed(peer)

    def _listed(self, address: str | None) -> bool:
        if not address:
            return False
        try:
            ip = ipaddress.ip_address(address.strip().strip("[]"))
        except ValueError:
            return False
        return any(ip in network for network in self._networks)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            if self.trusts(client[0] if client else None):
                scope = self._forwarded(scope)
        await self._app(scope, receive, send)

    def _forwarded(self, scope: dict[str, Any]) -> dict[str, Any]:
        values: dict[bytes, list[str]] = {}
        for name, value in scope["headers"]:
            name = name.lower()
            if name in (b"x-forwarded-proto", b"x-forwarded-for", b"x-forwarded-host"):
                values.setdefault(name, []).extend(v.strip() for v in value.decode("latin-1").split(","))
        scope = dict(scope)
        proto = [v for v in values.get(b"x-forwarded-proto", []) if v]
        if proto and proto[-1].lower() in ("http", "https"):
            secure = proto[-1].lower() == "https"
            if scope["type"] == "websocket":
                scope["scheme"] = "wss" if secure else "ws"
            else:
                scope["scheme"] = "https" if secure else "http"
        chain = [v for v in values.get(b"x-forwarded-for", []) if v]
        if chain:
            # Walk back past our own listed proxies; with "*" the router's own entry (the last)
            # is the client, as everything left of it came from the client.
            client = chain[0]
            for address in reversed(chain):
                client = address
                if not self._listed(address):
                    break
            scope["client"] = (client, 0)
        hosts = [v for v in values.get(b"x-forwarded-host", []) if v]
        if hosts:
            headers = [(n, v) for n, v in scope["headers"] if n.lower() != b"host"]
            scope["headers"] = [*headers, (b"host", hosts[-1].encode("latin-1"))]
        return scope
