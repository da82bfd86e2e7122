"""This process's connections, and the one reader that fans the log out to them.

The hub runs a single task reading `EventLog.tail()` and hands each event to the
subscriptions of its topic: a dict lookup and a deque append per subscriber, no encoding (the
event carries its bytes) and no await. Subscriptions are the transport-agnostic half of a
connection: SSE, WebSocket and long-poll all read from one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable

from app.infra.metrics import Metrics
from app.log.cursor import ORIGIN, Position
from app.log.eventlog import EventLog, LogGap
from app.log.events import Event, now_ms

log = logging.getLogger(__name__)


class SlowConsumer(Exception):
    """The subscription's buffer overflowed, or the hub dropped it; the client must resume."""


class Subscription:
    """A bounded buffer of live events for one connection.

    Overflow policy: when `max_buffered` events are waiting, the subscription is dropped from
    the hub (the connection is closed; the client resumes from its cursor) rather than let
    memory grow. Events at or before `last` are skipped, so an event seen during catch-up and
    again live is delivered once.

    A transport that writes without a task of its own (the lean SSE path) sets `sink`: live
    events then bypass the buffer and go straight to it, with the same `last` check. The sink
    returns False when its connection has fallen too far behind; the hub then drops it exactly
    as on a buffer overflow.
    """

    __slots__ = ("_buffer", "_hub", "_max", "_waiter", "dropped", "last", "on_drop", "on_revoke", "sink", "topics")

    def __init__(self, hub: Hub, topics: Iterable[str], max_buffered: int) -> None:
        self.topics: set[str] = set(topics)
        self.last: Position = ORIGIN
        self.dropped = False
        self._buffer: deque[Event] = deque()
        self._max = max_buffered
        self._waiter: asyncio.Future[None] | None = None
        self._hub = hub
        # Called once when dropped, so a transport blocked on a send can abort its connection.
        self.on_drop: Callable[[], object] | None = None
        self.sink: Callable[[Event], bool] | None = None
        # Called with a discussion id when its reader lost access to it (app/core/access_watch.py).
        self.on_revoke: Callable[[str], object] | None = None

    def push(self, event: Event) -> None:
        sink = self.sink
        if sink is not None:
            if event.position > self.last:
                self.last = event.position
                if not sink(event):
                    self._hub.drop(self, reason="slow_consumer")
            return
        if len(self._buffer) >= self._max:
            self._hub.drop(self, reason="slow_consumer")
            return
        self._buffer.append(event)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def mark_dropped(self) -> None:
        self.dropped = True
        self._buffer.clear()
        self._wake()
        if self.on_drop is not None:
            self.on_drop()

    def take(self) -> list[Event]:
        """The buffered events after `last`, in order; advances `last`."""
        events = []
        last = self.last
        buffer = self._buffer
        while buffer:
            event = buffer.popleft()
            if event.position > last:
                events.append(event)
                last = event.position
        self.last = last
        return events

    async def next_events(self, timeout_s: float) -> list[Event]:
        """Wait up to `timeout_s` for live events; [] on timeout. Raises `SlowConsumer`."""
        if self.dropped:
            raise SlowConsumer()
        if not self._buffer:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                # Not wait_for: on Python 3.11 it can swallow a cancellation that arrives as the
                # waiter completes (see PresenceTracker.run).
                async with asyncio.timeout(timeout_s):
                    await self._waiter
            except TimeoutError:
                pass
            finally:
                self._waiter = None
            if self.dropped:
                raise SlowConsumer()
        return self.take()

    def add_topic(self, topic: str) -> None:
        self._hub.add_topic(self, topic)

    def remove_topic(self, topic: str) -> None:
        self._hub.remove_topic(self, topic)

    def close(self) -> None:
        self._hub.unsubscribe(self)


class Hub:
    def __init__(self, log: EventLog, metrics: Metrics) -> None:
        self._log = log
        self._metrics = metrics
        self._by_topic: dict[str, set[Subscription]] = {}
        self._subscriptions: set[Subscription] = set()
        # Set by `stop()`: the process is shutting down (transports say "going away").
        self.stopping = False
        # Event type -> what to call for each such event before fanning it out (`watch`).
        self._watchers: dict[str, list[Callable[[Event], object]]] = {}

    @property
    def subscription_count(self) -> int:
        return len(self._subscriptions)

    def subscriber_count(self, topic: str) -> int:
        return len(self._by_topic.get(topic, ()))

    def has_subscribers(self, topic: str) -> bool:
        return bool(self._by_topic.get(topic))

    def subscribed_topics(self) -> list[str]:
        """The topics some connection of this process reads (e.g. who is connected here)."""
        return list(self._by_topic)

    def subscriptions_of(self, topic: str) -> tuple[Subscription, ...]:
        return tuple(self._by_topic.get(topic, ()))

    def watch(self, event_type: str, watcher: Callable[[Event], object]) -> None:
        """Call `watcher` with every event of `event_type` this process reads, before its
        subscribers get it (e.g. `access_revoked`: app/core/access_watch.py). Must not block."""
        self._watchers.setdefault(event_type, []).append(watcher)

    def subscribe(self, topics: Iterable[str], max_buffered: int) -> Subscription:
        subscription = Subscription(self, topics, max_buffered)
        if self.stopping:  # opened during shutdown: ends at once, like the others
            subscription.mark_dropped()
            return subscription
        self._subscriptions.add(subscription)
        for topic in subscription.topics:
            self._by_topic.setdefault(topic, set()).add(subscription)
        self._metrics.subscriptions.set(len(self._subscriptions))
        return subscription

    def add_topic(self, subscription: Subscription, topic: str) -> None:
        if subscription in self._subscriptions:
            subscription.topics.add(topic)
            self._by_topic.setdefault(topic, set()).add(subscription)

    def remove_topic(self, subscription: Subscription, topic: str) -> None:
        subscription.topics.discard(topic)
        subscribers = self._by_topic.get(topic)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._by_topic[topic]

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription not in self._subscriptions:
            return
        self._subscriptions.discard(subscription)
        for topic in list(subscription.topics):
            subscribers = self._by_topic.get(topic)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._by_topic[topic]
        self._metrics.subscriptions.set(len(self._subscriptions))

    def drop(self, subscription: Subscription, *, reason: str) -> None:
        self.unsubscribe(subscription)
        subscription.mark_dropped()
        self._metrics.dropped.labels(reason=reason).inc()

    def stop(self) -> None:
        """Shutdown: end every connection's stream now, cleanly. Each transport's wait ends with
        `SlowConsumer` and, seeing `stopping`, finishes its response (SSE: the body ends;
        WebSocket: close 1001; long-poll: answers) instead of being cut at the graceful timeout.
        No `on_drop` abort: the transports are not stuck, they just wait for events."""
        self.stopping = True
        for subscription in tuple(self._subscriptions):
            subscription.on_drop = None
            self.drop(subscription, reason="shutdown")

    def dispatch(self, event: Event) -> None:
        watchers = self._watchers.get(event.type)
        if watchers is not None:
            for watcher in watchers:
                try:
                    watcher(event)
                except Exception:  # a watcher's bug must not stop this process's only reader
                    log.exception("hub: watcher of %s failed", event.type)
        subscribers = self._by_topic.get(event.topic)
        if not subscribers:
            return
        # Copy: a push may drop a slow subscriber, which edits the set.
        for subscription in tuple(subscribers):
            subscription.push(event)
        self._metrics.delivered.inc(len(subscribers))
        # One latency sample per event and process (log time to hand-off), not per delivery:
        # observing a histogram per subscriber would cost more than the delivery itself.
        self._metrics.delivery_latency.observe(max(0, now_ms() - event.position.ms) / 1000)

    async def run(self) -> None:
        """The process's one log reader. Owned by the app; cancelled on shutdown."""
        async for item in self._log.tail():
            if isinstance(item, LogGap):
                for subscription in tuple(self._subscriptions):
                    self.drop(subscription, reason="log_gap")
                continue
            self.dispatch(item)
