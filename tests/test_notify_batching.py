"""The notification worker handles a batch of journal events at once (issue 13): replies,
mentions (private discussions included), followers and preferences give exactly the right
notifications, stored once and published once, also when the batch is handled again (a new
lease holder after a crash or a lost lease). Real Redis log, real SQLite database, the app's
real services; the test holds the worker lease itself, so the app's own worker stays idle
and the test decides what is a batch.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select, update

from app.core.active_users_memory import LocalActiveUsers
from app.core.node import Node
from app.core.services import Services
from app.domain.models import (
    Discussion,
    DiscussionMember,
    Follow,
    Notification,
    NotificationPreferences,
    Response,
    User,
)
from app.infra.lease_memory import MemoryLease
from app.infra.lease_redis import RedisLease
from app.infra.redis_connection import RedisConnection
from app.infra.redis_keys import RedisKeys
from app.log import topics
from app.log.cursor import Cursor
from app.log.eventlog_redis import NotReplicated
from app.log.events import Event
from app.log.journal_consumer import JournalConsumer, JournalHandler
from app.main import create_app
from app.notify.delivery import Delivery
from app.notify.webpush import PushSender
from app.notify.worker import LEASE_NAME, NotifyHandler
from app.settings import Settings

from .support import OwnRedisEventLog

_pushers: dict[int, PushSender] = {}


@pytest.fixture
async def parley(
    tmp_path: Path, redis_url: str, redis_prefix: str, redis_connection: RedisConnection
) -> AsyncIterator[Services]:
    # Held by the test for the whole test: the app's own notification worker never reads.
    held = RedisLease(redis_connection, RedisKeys(redis_prefix), LEASE_NAME, lease_s=120, checkpoint_ttl_s=3600)
    assert await held.hold()
    env = {
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/parley.db",
        "PARLEY_DATA_DIR": str(tmp_path),
        "REDIS_URL": redis_url,
        "PARLEY_REDIS_PREFIX": redis_prefix,
    }
    app = create_app(Settings.from_env(env))
    try:
        async with app.test_app():
            services: Services = app.extensions["parley"]
            _pushers[id(services)] = app.extensions["parley.push"]
            yield services
            del _pushers[id(services)]
    finally:
        await held.release()
        await held.close()


def handler(parley: Services, activity_interval_s: float = 1.0) -> NotifyHandler:
    """A fresh holder's handler, as after a crash or a lease change."""
    delivery = Delivery(parley, _pushers[id(parley)], activity_interval_s=activity_interval_s)
    return NotifyHandler(parley, LocalActiveUsers(parley.presence), delivery)


async def seed(parley: Services) -> dict[str, int]:
    """alice writes in `pub` (public) and `priv` (private: alice, bob; not carol); dan and
    erin follow `pub`, erin opted in to `followed` notifications; frank switched mentions off."""
    async with parley.db.session() as session:
        session.add_all(User(id=u, name=u.capitalize()) for u in ["alice", "bob", "carol", "dan", "erin", "frank"])
        await session.flush()
        session.add(Discussion(id="pub", title="Public", visibility="public", created_by="alice"))
        session.add(Discussion(id="priv", title="Private", visibility="private", created_by="alice"))
        await session.flush()
        session.add(DiscussionMember(discussion_id="priv", user_id="bob"))
        session.add_all([Follow(user_id="dan", discussion_id="pub"), Follow(user_id="erin", discussion_id="pub")])
        session.add(NotificationPreferences(user_id="erin", followed=True))
        session.add(NotificationPreferences(user_id="frank", mentions=False))
        parents = {
            "bob_pub": Response(discussion_id="pub", author_id="bob", body="parent"),
            "carol_pub": Response(discussion_id="pub", author_id="carol", body="parent"),
            "bob_priv": Response(discussion_id="priv", author_id="bob", body="parent"),
        }
        session.add_all(parents.values())
        await session.commit()
        return {name: int(r.id or 0) for name, r in parents.items()}


async def post(parley: Services, discussion: str, author: str, body: str, parent: int | None = None) -> str:
    """A response as REST stores and announces it (row committed, then `response_posted`)."""
    async with parley.db.session() as session:
        response = Response(discussion_id=discussion, author_id=author, body=body, parent_id=parent)
        session.add(response)
        await session.commit()
        response_id = str(response.id)
    await parley.publish(
        topics.discussion(discussion),
        "response_posted",
        discussion_id=discussion,
        user={"id": author, "name": author.capitalize()},
        payload={"response": {"id": response_id, "body": body, "parent_id": None if parent is None else str(parent)}},
    )
    return response_id


async def stored(parley: Services) -> list[tuple[str, str, str]]:
    async with parley.db.session() as session:
        rows = (await session.exec(select(Notification))).all()
    return sorted((n.user_id, n.type, str(n.response_id)) for n in rows)


async def published(parley: Services, start: Cursor) -> list[str]:
    """Ids of the `notification` events published after `start`, in order, repeats kept."""
    events = await parley.log.read_journal(start, 10_000, 0.0)
    return [e.as_dict()["payload"]["notification"]["id"] for e in events if e.type == "notification"]


async def batch(parley: Services, start: Cursor) -> list[Event]:
    return await parley.log.read_journal(start, 10_000, 0.0)


async def test_a_batch_gives_exactly_the_right_notifications_once_also_when_replayed(parley: Services) -> None:
    parents = await seed(parley)
    start = await parley.log.head()
    r1 = await post(parley, "pub", "alice", "Agreed, @bob and @Carol", parent=parents["bob_pub"])
    r2 = await post(parley, "pub", "alice", "again, @frank @nobody", parent=parents["carol_pub"])
    r3 = await post(parley, "priv", "alice", "@bob @carol in private", parent=parents["bob_priv"])
    r4 = await post(parley, "pub", "bob", "my own reply, @bob", parent=parents["bob_pub"])
    events = await batch(parley, start)
    assert len(events) == 4

    assert await handler(parley).handle(start, events, asyncio.Event())
    expected = sorted(
        [
            ("bob", "mention", r1),  # mentioned and replied to: one notification, the mention
            ("carol", "mention", r1),
            ("erin", "activity", r1),  # opted in: one unread activity notification per discussion
            ("carol", "reply", r2),  # frank switched mentions off; nobody is named `nobody`
            ("bob", "mention", r3),  # carol cannot read `priv`: not notified
        ]
    )
    assert await stored(parley) == expected  # r4: bob's own words notify nobody (dan: no opt-in)
    first = await published(parley, start)
    assert len(first) == len(expected) == len(set(first))
    async with parley.db.session() as session:
        pending = (await session.exec(select(Notification).where(Notification.delivery_state != "published"))).all()
    assert pending == []

    # A new holder handles the same batch again (the old one died before its checkpoint).
    after_first = await parley.log.head()
    assert await handler(parley).handle(start, events, asyncio.Event())
    assert await stored(parley) == expected
    assert await published(parley, after_first) == []

    # Died between storing and publishing two of them: the replay publishes exactly those.
    async with parley.db.session() as session:
        ids = sorted((await session.exec(select(Notification.id).where(Notification.user_id == "carol"))).all())
        await session.exec(update(Notification).where(col(Notification.id).in_(ids)).values(delivery_state="pending"))
        await session.commit()
    after_second = await parley.log.head()
    assert await handler(parley).handle(start, events, asyncio.Event())
    assert sorted(await published(parley, after_second)) == ids
    assert await stored(parley) == expected
    assert r4  # posted, and notified nobody


async def test_notifications_are_marked_published_only_once_their_batch_is_appended(
    parley: Services, redis_url: str, redis_prefix: str
) -> None:
    """NFR-009: stored, appended, then recorded. A log that refuses the batch (here: no replica
    confirms it, PARLEY_LOG_WAIT_REPLICAS=1 on a Redis without replicas) leaves every row
    pending, and the next run publishes them."""
    parents = await seed(parley)
    start = await parley.log.head()
    await post(parley, "pub", "alice", "Agreed, @bob and @Carol", parent=parents["bob_pub"])
    await post(parley, "pub", "alice", "again", parent=parents["carol_pub"])
    events = await batch(parley, start)
    refusing = OwnRedisEventLog(redis_url, prefix=redis_prefix, retention_s=3600, wait_replicas=1)
    await refusing.open()
    try:
        node = Node(refusing, parley.presence.store, parley.metrics, parley.node.settings)
        refused = dataclasses.replace(parley, node=node)
        _pushers[id(refused)] = _pushers[id(parley)]
        try:
            with pytest.raises(NotReplicated):
                await handler(refused).handle(start, events, asyncio.Event())
        finally:
            del _pushers[id(refused)]
    finally:
        await refusing.close()
    async with parley.db.session() as session:
        states = (await session.exec(select(Notification.delivery_state))).all()
    assert states and set(states) == {"pending"}
    assert await handler(parley).handle(start, events, asyncio.Event())
    async with parley.db.session() as session:
        rows = (await session.exec(select(Notification))).all()
    assert {n.delivery_state for n in rows} == {"published"}
    assert {n.id for n in rows} <= set(await published(parley, start))


async def test_a_holder_that_lost_the_lease_stores_nothing(parley: Services) -> None:
    parents = await seed(parley)
    start = await parley.log.head()
    await post(parley, "pub", "alice", "@carol", parent=parents["bob_pub"])
    lost = asyncio.Event()
    lost.set()
    assert not await handler(parley).handle(start, await batch(parley, start), lost)
    assert await stored(parley) == []


async def test_activity_updates_are_one_per_follower_and_discussion_then_wait_their_interval(parley: Services) -> None:
    await seed(parley)
    start = await parley.log.head()
    for i in range(5):
        await post(parley, "pub", "alice", f"news {i}")
    # Not durable, so not in the journal: watch the live log, up to a durable marker after them.
    activity: list[tuple[str, dict[str, Any]]] = []

    async def updates_until_marker(work: Awaitable[object]) -> list[tuple[str, dict[str, Any]]]:
        async def watch() -> None:
            async for item in parley.log.tail():
                if isinstance(item, Event) and item.type == "activity":
                    activity.append((item.topic, item.as_dict()["payload"]))
                if isinstance(item, Event) and item.type == "broadcast":
                    return

        activity.clear()
        watching = asyncio.create_task(watch())
        await asyncio.sleep(0.2)  # the tail reads from now on
        await work
        await parley.publish("t:marker", "broadcast", discussion_id=None, user=None, payload={})
        async with asyncio.timeout(10):
            await watching
        return sorted(activity)

    worker = handler(parley, activity_interval_s=120)  # the second batch surely comes within it
    first = await updates_until_marker(worker.handle(start, await batch(parley, start), asyncio.Event()))
    assert [topic for topic, _ in first] == [topics.user("dan"), topics.user("erin")]
    # Unread: the 5 and the two parents bob and carol wrote in `pub`.
    assert {(p["discussion_id"], p["unread_count"]) for _, p in first} == {("pub", 7)}
    assert [n[:2] for n in await stored(parley)] == [("erin", "activity")]

    # The next batch within the interval: its update waits, and goes out once the worker is idle.
    second_start = await parley.log.head()
    await post(parley, "pub", "alice", "news 5")
    assert (
        await updates_until_marker(worker.handle(second_start, await batch(parley, second_start), asyncio.Event()))
        == []
    )
    flushed = await updates_until_marker(worker.idle())
    assert [(topic, p["unread_count"]) for topic, p in flushed] == [(topics.user("dan"), 8), (topics.user("erin"), 8)]


class Recording(JournalHandler):
    """Fails every time on one event; records what each successful batch held."""

    def __init__(self, poison: str) -> None:
        self.poison = poison
        self.handled: list[str] = []

    async def handle(self, start: Cursor, events: list[Event], lost: asyncio.Event) -> bool:
        if any(e.as_dict()["payload"].get("n") == self.poison for e in events):
            raise RuntimeError("poisoned")
        self.handled.extend(e.as_dict()["payload"]["n"] for e in events)
        return True


async def test_the_consumer_skips_an_event_that_always_fails_and_handles_the_rest_once(parley: Services) -> None:
    lease = MemoryLease()
    await lease.initialise(str(await parley.log.head()))
    for n in "abcdef":
        await parley.publish("t:x", "broadcast", discussion_id=None, user=None, payload={"n": n})
    head = str(await parley.log.head())
    recording = Recording("c")
    consumer = JournalConsumer("test", parley.log, lease, recording, lease_s=3, batch_limit=100, read_wait_s=0.05)
    running = asyncio.create_task(consumer.run())
    try:
        # The checkpoint is saved after the handler returns: wait for both, or a cancel
        # between the two leaves the checkpoint one event short.
        async with asyncio.timeout(20):
            while recording.handled[-1:] != ["f"] or await lease.checkpoint() != head:
                await asyncio.sleep(0.05)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert recording.handled == ["a", "b", "d", "e", "f"]
    checkpoint: Any = await lease.checkpoint()
    assert checkpoint == head
