"""Five protocol fixes to Hypercorn 0.18, applied once per process before serving (`apply()`).

Each replaces one method with the upstream code plus the fix, and says why. They are applied
only to the Hypercorn they were written against (`FIXED_VERSIONS`); pyproject pins it, and
`tests/test_protocol_edges.py` fails if any of them stops working.

1. WebSocket over HTTP/2 (RFC 8441, extended CONNECT, which Hypercorn advertises with
   SETTINGS_ENABLE_CONNECT_PROTOCOL): after a close the stream was never ended (`_close_stream`
   dropped it without END_STREAM), so every finished session kept counting against the
   connection's 100 concurrent streams, and the 101st request on it hung. Now a stream whose
   handler is done is ended once its buffered data is out.
2. A WebSocket frame wsproto cannot parse (bad opcode, unmasked, invalid UTF-8...) dropped TCP
   without a Close frame. RFC 6455 §7.1.7: fail the connection with a Close frame first (1002
   protocol error, 1007 invalid payload, as wsproto classifies it).
3. An unsupported `Sec-WebSocket-Version` got a bare 400. RFC 6455 §4.4: 426 Upgrade Required
   with `Sec-WebSocket-Version: 13`. Also no `Connection: close` on an HTTP/2 handshake refusal
   (a connection-specific header is a protocol error in HTTP/2).
4. A server-side close of an HTTP/2 connection (idle at shutdown, keep-alive timeout) closed TCP
   with no GOAWAY; now it says GOAWAY (NO_ERROR) first, so clients know nothing was lost.
5. DATA for an HTTP/2 stream whose handler is already gone (a WebSocket client ending its half
   of the stream after the close handshake, as RFC 8441 has it) raised KeyError and killed the
   whole connection; now it is acknowledged (flow control) and ignored.
"""

from __future__ import annotations

import contextlib
import logging
import time
from importlib.metadata import version
from typing import Any

import h2.connection
import h2.events
import h2.exceptions
import priority.priority
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.protocol.events import EndBody, Response, StreamClosed
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.protocol.ws_stream import FrameTooLargeError, WSStream
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Message, Ping
from wsproto.frame_protocol import CloseReason
from wsproto.handshake import WEBSOCKET_VERSION

log = logging.getLogger(__name__)

FIXED_VERSIONS = ("0.18.",)
_applied = False


def apply() -> bool:
    """Patch Hypercorn in this process (idempotent); False if its version is not the one fixed."""
    global _applied
    if _applied:
        return True
    installed = version("hypercorn")
    if not installed.startswith(FIXED_VERSIONS):
        log.warning("hypercorn %s: protocol fixes written for %s not applied", installed, FIXED_VERSIONS)
        return False
    original_close_stream = H2Protocol._close_stream
    original_server_close = TCPServer._initiate_server_close
    original_handle_events = H2Protocol._handle_events

    async def handle_events(self: H2Protocol, events: list[h2.events.Event]) -> None:
        # One event at a time: an event earlier in the batch may open the stream (HEADERS) or
        # finish it (a WebSocket's Close frame) that a later DATA belongs to.
        for event in events:
            if isinstance(event, h2.events.DataReceived) and event.stream_id not in self.streams:
                # Fix 5: late DATA (or END_STREAM) for a finished stream: credit it, drop it.
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self.connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                continue
            await original_handle_events(self, [event])
        await self._flush()

    async def close_stream(self: H2Protocol, stream_id: int) -> None:
        await original_close_stream(self, stream_id)
        buffer = self.stream_buffers.get(stream_id)
        if buffer is not None and not self.closed:
            # Fix 1: the handler is done but the stream may not be ended (a WebSocket after
            # its close handshake): end it when its data is sent. The send task ends a complete
            # buffer's stream once (or drops it if the peer already reset the stream).
            buffer.set_complete()
            with contextlib.suppress(priority.priority.MissingStreamError):
                self.priority.unblock(stream_id)
            await self.has_data.set()

    async def initiate_server_close(self: TCPServer) -> None:
        inner = getattr(getattr(self, "protocol", None), "protocol", None)
        if isinstance(inner, H2Protocol) and not inner.closed:
            # Fix 4: GOAWAY before closing (once: Hypercorn may have sent it already).
            connection = inner.connection
            if connection.state_machine.state is not h2.connection.ConnectionState.CLOSED:
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    connection.close_connection()
                    await inner._flush()
        await original_server_close(self)

    H2Protocol._close_stream = close_stream  # type: ignore[method-assign]
    H2Protocol._handle_events = handle_events  # type: ignore[method-assign]
    TCPServer._initiate_server_close = initiate_server_close  # type: ignore[method-assign]
    WSStream._handle_events = _ws_handle_events  # type: ignore[method-assign]
    WSStream._send_error_response = _ws_send_error_response  # type: ignore[method-assign]
    _applied = True
    return True


async def _ws_handle_events(self: Any) -> None:
    """`WSStream._handle_events` of Hypercorn 0.18, with fix 2 (the `OPEN` branch)."""
    for event in self.connection.events():
        if isinstance(event, Message):
            try:
                self.buffer.extend(event)
            except FrameTooLargeError:
                await self._send_wsproto_event(CloseConnection(code=CloseReason.MESSAGE_TOO_BIG))
                break

            if event.message_finished:
                await self.app_put(self.buffer.to_message())
                self.buffer.clear()
        elif isinstance(event, Ping):
            await self._send_wsproto_event(event.response())
        elif isinstance(event, CloseConnection):
            if self.connection.state == ConnectionState.REMOTE_CLOSING:
                await self._send_wsproto_event(event.response())
            elif self.connection.state == ConnectionState.OPEN:
                # No Close frame came in: wsproto failed to parse one (its code says why).
                # Fail the connection with our Close frame before the stream goes.
                await self._send_wsproto_event(CloseConnection(code=event.code, reason=event.reason))
            await self.send(StreamClosed(stream_id=self.stream_id))


async def _ws_send_error_response(self: Any, status_code: int) -> None:
    """`WSStream._send_error_response` of Hypercorn 0.18, with fix 3."""
    headers = [(b"content-length", b"0")]
    if self.handshake.http_version != "2":
        headers.append((b"connection", b"close"))
    if status_code == 400 and self.handshake.version != WEBSOCKET_VERSION:
        status_code = 426
        headers.append((b"sec-websocket-version", WEBSOCKET_VERSION))
    await self.send(Response(stream_id=self.stream_id, status_code=status_code, headers=headers))
    await self.send(EndBody(stream_id=self.stream_id))
    await self.config.log.access(self.scope, {"status": status_code, "headers": []}, time.time() - self.start_time)
