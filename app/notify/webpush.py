"""Web Push (FR-009, NFR-011): VAPID keys, subscription validation, and a bounded sender.

Sending: pywebpush encrypts the payload (aes128gcm, RFC 8291) and py_vapid signs the VAPID
JWT (RFC 8292); the request itself goes out on one shared `httpx.AsyncClient`, so a send is
a coroutine with its own timeout rather than a thread blocked in `requests`.

`PushSender` owns a bounded queue and `push_concurrency` consumer tasks. A push service that
hangs costs one consumer one timeout per attempt, never the others (bounded concurrency).
Each subscription is tried up to 1 + `MAX_RETRIES` times, backing off between attempts, on
network errors, timeouts, 429 and 5xx; 404 and 410 mean the subscription is gone, so it is
deleted (PITFALLS, Web Push). The TTL is always set (pywebpush's default 0 would drop the
message for an offline browser) and the urgency follows the notification's priority.
Connections reach public addresses only (`push_target.py`, SSRF).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from py_vapid import Vapid02
from sqlmodel import col, delete, select

from app.domain.models import Notification, PushSubscription
from app.infra.db import Database
from app.infra.metrics import Metrics
from app.notify.push_target import RefusedTarget, UnresolvableTarget, push_client

log = logging.getLogger(__name__)

MAX_RETRIES = 3
# How long a push service keeps a message for an offline browser (seconds).
PUSH_TTL_S = 24 * 3600
QUEUE_MAX = 1_000
MAX_ENDPOINT_CHARS = 2048
VAPID_KEY_FILE = "vapid_private.pem"
# VAPID JWTs may live at most 24 h (RFC 8292); 12 h as pywebpush does.
VAPID_JWT_TTL_S = 12 * 3600


class InvalidSubscription(ValueError):
    """A push subscription the API refuses (422)."""


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def validate_subscription(endpoint: str, p256dh: str, auth: str, *, allow_insecure: bool) -> None:
    """Raise `InvalidSubscription` unless this is a usable Push API subscription."""
    if len(endpoint) > MAX_ENDPOINT_CHARS:
        raise InvalidSubscription("endpoint: too long")
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 (raises ValueError for a port that is no port)
    except ValueError:  # "https://[::1", "https://host:99999"
        raise InvalidSubscription("endpoint: not a URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidSubscription("endpoint: must be an absolute https URL")
    if not allow_insecure and parts.scheme != "https":
        raise InvalidSubscription("endpoint: must be an https URL of a push service")
    try:
        point = b64url_decode(p256dh)
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except (binascii.Error, ValueError):
        raise InvalidSubscription("keys.p256dh: not a base64url P-256 public key") from None
    if len(point) != 65:
        raise InvalidSubscription("keys.p256dh: must be an uncompressed P-256 point (65 bytes)")
    try:
        secret = b64url_decode(auth)
    except (binascii.Error, ValueError):
        raise InvalidSubscription("keys.auth: not base64url") from None
    if len(secret) != 16:
        raise InvalidSubscription("keys.auth: must be 16 bytes")


def load_vapid(private_key: str | None, data_dir: Path) -> Vapid02:
    """The VAPID key: from `PARLEY_VAPID_PRIVATE_KEY` (PEM, DER or raw, base64url), else the
    one generated once and kept in `data_dir` (the embedded default). Several processes
    sharing a data dir race safely: each writes its key whole under a temporary name and links
    it into place, which fails if the name exists, so the first wins, the others read its key,
    and nobody reads a half-written file (workers of `WEB_CONCURRENCY` start at once).
    Several *servers* must share one key: set `PARLEY_VAPID_PRIVATE_KEY`."""
    if private_key:
        text = private_key.strip()
        if text.startswith("-----BEGIN"):
            return Vapid02.from_pem(text.encode())
        return Vapid02.from_string(text)
    path = data_dir / VAPID_KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        vapid = Vapid02()
        vapid.generate_keys()
        descriptor, temporary = tempfile.mkstemp(dir=data_dir, prefix=".vapid-")  # mode 0600
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(vapid.private_pem())
            os.link(temporary, path)
            return vapid
        except FileExistsError:
            pass  # another process's key is in place, whole
        finally:
            os.unlink(temporary)
    return Vapid02.from_file(str(path))


def vapid_public_key(vapid: Vapid02) -> str:
    """The key a browser passes as `applicationServerKey`: the uncompressed point, base64url."""
    public: ec.EllipticCurvePublicKey = vapid.public_key
    return b64url_encode(public.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint))


@dataclass(frozen=True, slots=True)
class PushJob:
    notification_id: str
    user_id: str
    payload: dict[str, Any]
    urgency: str  # "high" for mentions, else "normal" (RFC 8030 Urgency)


class PushSender:
    def __init__(
        self,
        vapid: Vapid02,
        *,
        subject: str,
        db: Database,
        metrics: Metrics,
        timeout_s: float,
        concurrency: int,
        backoff_s: float,
        allow_private: bool = False,
    ) -> None:
        self._vapid = vapid
        self._subject = subject
        self._db = db
        self._metrics = metrics
        self._timeout_s = timeout_s
        self._concurrency = concurrency
        self._backoff_s = backoff_s
        self._allow_private = allow_private
        # Overflow policy: `enqueue` waits (backpressure on the notification worker), so the
        # queue never grows past QUEUE_MAX and nothing is dropped.
        self._queue: asyncio.Queue[PushJob] = asyncio.Queue(QUEUE_MAX)
        self._first_job = asyncio.Event()

    @property
    def public_key(self) -> str:
        return vapid_public_key(self._vapid)

    async def enqueue(self, job: PushJob) -> None:
        self._first_job.set()
        await self._queue.put(job)

    async def run(self) -> None:
        """The consumers. Owned by the app; cancelled on shutdown."""
        # The HTTP client is made when the first push is due, not at start: its TLS contexts
        # load the CA bundle (~0.1 s of start-up), and many processes never push.
        await self._first_job.wait()
        async with push_client(self._timeout_s, allow_private=self._allow_private) as client:
            consumers = [asyncio.create_task(self._consume(client)) for _ in range(self._concurrency)]
            try:
                await asyncio.gather(*consumers)
            finally:
                for consumer in consumers:
                    consumer.cancel()
                await asyncio.gather(*consumers, return_exceptions=True)

    async def _consume(self, client: httpx.AsyncClient) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self.deliver(client, job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("web push for notification %s failed", job.notification_id)
            finally:
                self._queue.task_done()

    async def deliver(self, client: httpx.AsyncClient, job: PushJob) -> str:
        """Send to every subscription of the user; record the outcome on the notification."""
        async with self._db.session() as session:
            rows = await session.exec(select(PushSubscription).where(PushSubscription.user_id == job.user_id))
            subscriptions = list(rows.all())
        data = json.dumps(job.payload, separators=(",", ":")).encode()
        outcomes = await asyncio.gather(*(self._send(client, sub, data, job.urgency) for sub in subscriptions))
        state = "sent" if "sent" in outcomes else "gone" if outcomes and set(outcomes) == {"gone"} else "failed"
        if not subscriptions:
            state = "none"
        async with self._db.session() as session:
            notification = await session.get(Notification, job.notification_id)
            if notification is not None:
                notification.push_state = state
                session.add(notification)
                await session.commit()
        return state

    async def _send(self, client: httpx.AsyncClient, subscription: PushSubscription, data: bytes, urgency: str) -> str:
        # Imported on first use: pywebpush brings aiohttp and requests (~0.5 s of start-up), and
        # most processes never push.
        from pywebpush import WebPusher

        info = {"endpoint": subscription.endpoint, "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth}}
        backoff_s = self._backoff_s
        for attempt in range(1 + MAX_RETRIES):
            if attempt:
                await asyncio.sleep(backoff_s)
                backoff_s *= 2
            # Encrypted afresh per attempt: a new salt and ephemeral key each time.
            body = WebPusher(info).encode(data, "aes128gcm")["body"]
            origin = "{0.scheme}://{0.netloc}".format(urlsplit(subscription.endpoint))
            # A fresh claims dict each call: py_vapid/pywebpush modify it in place (PITFALLS).
            claims: dict[str, str | int] = {
                "sub": self._subject,
                "aud": origin,
                "exp": int(time.time()) + VAPID_JWT_TTL_S,
            }
            headers = dict(self._vapid.sign(claims))
            headers.update(
                {
                    "TTL": str(PUSH_TTL_S),
                    "Urgency": urgency,
                    "Content-Encoding": "aes128gcm",
                    "Content-Type": "application/octet-stream",
                }
            )
            try:
                response = await client.post(subscription.endpoint, content=body, headers=headers)
            except RefusedTarget as refused:  # checked again at connect time: DNS may have changed
                log.warning("push to %s refused: %s", origin, refused)
                self._metrics.push_attempts.labels(outcome="refused").inc()
                return "failed"
            except (httpx.HTTPError, UnresolvableTarget) as error:  # includes timeouts: a hanging push service
                log.warning("push to %s: %s (attempt %d)", origin, type(error).__name__, attempt + 1)
                self._metrics.push_attempts.labels(outcome="error").inc()
                continue
            if response.status_code in (404, 410):
                self._metrics.push_attempts.labels(outcome="gone").inc()
                await self._forget(subscription.endpoint)
                return "gone"
            if response.status_code < 300:
                self._metrics.push_attempts.labels(outcome="sent").inc()
                return "sent"
            self._metrics.push_attempts.labels(outcome=f"http_{response.status_code // 100}xx").inc()
            if response.status_code != 429 and response.status_code < 500:
                log.warning("push to %s refused: %d %s", origin, response.status_code, response.text[:200])
                return "failed"
        return "failed"

    async def _forget(self, endpoint: str) -> None:
        async with self._db.session() as session:
            await session.exec(delete(PushSubscription).where(col(PushSubscription.endpoint) == endpoint))
            await session.commit()
