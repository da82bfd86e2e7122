"""A reason phrase on the status lines Hypercorn writes over HTTP/1.1 (`HTTP/1.1 200 OK`).

ASGI carries no reason phrase, and Hypercorn sends h11's default, an empty one
(`HTTP/1.1 200 `): legal, but it reads as broken in `curl -i` and trips strict clients. The
lean front writes its own status lines with phrases (`web/error_response.http11`, `lean_sse`).

Hypercorn has no option for it: `install` swaps in a subclass of its HTTP/1.1 protocol
that fills in the standard phrase. Every process that serves calls it (`app.serving`).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import h11
import hypercorn.protocol
from hypercorn.protocol.h11 import H11Protocol


def phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:  # a status code the standard library does not name
        return b""


class PhrasedH11Protocol(H11Protocol):
    async def _send_h11_event(self, event: Any) -> None:
        if isinstance(event, h11.Response | h11.InformationalResponse) and not event.reason:
            event = type(event)(
                status_code=event.status_code,
                headers=event.headers,
                http_version=event.http_version,
                reason=phrase(event.status_code),
            )
        await super()._send_h11_event(event)


def install() -> None:
    """Make Hypercorn's connections in this process use `PhrasedH11Protocol` (idempotent)."""
    hypercorn.protocol.H11Protocol = PhrasedH11Protocol  # type: ignore[attr-defined]
