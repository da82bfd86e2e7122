"""Notification worker throughput and lag under a steady stream of responses (issue 13, goal 4).

    python bench/notify_throughput.py [--backend embedded|redis] [--rate 1000] [--seconds 10]
                                      [--discussions 50] [--followers 10] [--cpu-quota 0.4]

Builds the real app (`create_app`, its `before_serving`: the real worker, log and database)
in this process and feeds it `--rate` responses per second for `--seconds`, the way a post
does: the `Response` rows are inserted and committed (a tick's worth in one transaction, with
the discussions' last activity), then each `response_posted` is appended to the log. Every
discussion has `--followers` followers (half of them opted in to `followed` notifications);
every response replies to another user's response (a `reply` notification) and every other
one mentions a third user (a `mention`). Followers get `activity` updates.

Measured from the log itself (read as the run goes, 2 times a second): the lag of a response is the time from its
`response_posted` to the `notification` events it caused (both positions carry the log's
clock: this process's, or Redis `TIME`). Prints lag p50/p95/max over all notifications,
notifications per second (stored notifications over the time from the first post to the
last notification) and how many were expected. `--backend redis`: Redis (a private
redis-server, or REDIS_URL) and PostgreSQL at 127.0.0.1:5432 (a fresh database, dropped after);
it also prints the append script calls Redis ran (`INFO commandstats`, EVAL + EVALSHA: the
feeder's one per response and the worker's; all clients', so a shared REDIS_URL counts others').
`--cpu-quota 0.4`: this process capped at 0.4 of a core (a cgroup v1 `cpu` controller, as
`bench/run.py scale` uses), for a figure that does not depend on what else the machine runs.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlmodel import col, insert, update

from app.domain.models import Discussion, Follow, NotificationPreferences, Response, User, utcnow
from app.log import topics
from app.log.cursor import Cursor
from app.log.events import rfc3339
from app.main import create_app
from app.settings import Settings

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
TICK_S = 0.01
MAX_TICK_ROWS = 200


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@contextlib.contextmanager
def redis_url() -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    from tests.support import private_redis

    with private_redis() as url:
        yield url


@contextlib.asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    import asyncpg

    from app.infra import migrate

    name = f"parley_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    await asyncio.to_thread(migrate.upgrade, url)
    try:
        yield url
    finally:
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
        try:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def redis_cpu_s(url: str | None) -> tuple[float, int]:
    """CPU seconds the Redis server has used (INFO cpu) and the scripts it ran (INFO
    commandstats: EVAL + EVALSHA), or zeros without Redis."""
    if url is None:
        return 0.0, 0
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url)
    try:
        info = await client.info("cpu")
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    scripts = sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("eval", "evalsha"))
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"]), scripts


async def seed(parley: Any, discussions: int, followers: int) -> dict[str, int]:
    """Users, discussions, follows and one parent response per discussion; returns the parents."""
    async with parley.db.session() as session:
        users = {"poster"} | {f"parent{d}" for d in range(discussions)} | {f"named{d}" for d in range(discussions)}
        users |= {f"f{d}-{i}" for d in range(discussions) for i in range(followers)}
        session.add_all(User(id=u, name=u) for u in sorted(users))
        await session.flush()
        for d in range(discussions):
            session.add(Discussion(id=f"d{d}", title=f"bench {d}", visibility="public", created_by="poster"))
        await session.flush()
        for d in range(discussions):
            for i in range(followers):
                session.add(Follow(user_id=f"f{d}-{i}", discussion_id=f"d{d}"))
                if i % 2:
                    session.add(NotificationPreferences(user_id=f"f{d}-{i}", followed=True))
        parents = [Response(discussion_id=f"d{d}", author_id=f"parent{d}", body="parent") for d in range(discussions)]
        session.add_all(parents)
        await session.commit()
        return {p.discussion_id: int(p.id or 0) for p in parents}


async def feed(parley: Any, parents: dict[str, int], rate: float, seconds: float) -> int:
    """`rate` responses per second for `seconds`: each tick inserts what is due in one
    transaction (Core, so the feeder costs little beside the worker), then appends their
    events (as `outbox.relay` does after a post's commit)."""
    ids = sorted(parents)
    total = int(rate * seconds)
    sent, slowest_tick_s = 0, 0.0
    started = time.perf_counter()
    while sent < total:
        # At most MAX_TICK_ROWS a transaction: a feeder that fell behind catches up over several.
        due = min(total, int((time.perf_counter() - started) * rate) + 1, sent + MAX_TICK_ROWS) - sent
        if due <= 0:
            await asyncio.sleep(TICK_S)
            continue
        tick, now = time.perf_counter(), utcnow()
        rows = []
        for n in range(sent, sent + due):
            d = ids[n % len(ids)]
            body = f"@named{d[1:]} look at this, {n}" if n % 2 else f"a reply, {n}"
            rows.append(
                {"discussion_id": d, "author_id": "poster", "body": body, "parent_id": parents[d], "created_at": now}
            )
        async with parley.db.session() as session:
            inserted = await session.exec(insert(Response).values(rows).returning(col(Response.id)))
            response_ids = [row[0] for row in inserted.all()]
            touched = sorted({str(row["discussion_id"]) for row in rows})
            await session.exec(update(Discussion).where(col(Discussion.id).in_(touched)).values(last_activity_at=now))
            await session.commit()
        # Appended concurrently, as concurrent requests do (one by one, a Redis round trip each
        # would cap the feeder, not the worker).
        await asyncio.gather(
            *(append(parley, response_id, row, now) for response_id, row in zip(response_ids, rows, strict=True))
        )
        sent += due
        slowest_tick_s = max(slowest_tick_s, time.perf_counter() - tick)
        await asyncio.sleep(TICK_S)
    print(f"  feeder: slowest tick (insert + commit + appends) {slowest_tick_s * 1000:.0f} ms")
    return sent


async def append(parley: Any, response_id: int, row: dict[str, Any], now: datetime) -> None:
    body = {
        "id": str(response_id),
        "discussion_id": row["discussion_id"],
        "author": {"id": "poster", "name": "poster"},
        "body": row["body"],
        "parent_id": str(row["parent_id"]),
        "stances": {},
        "created_at": rfc3339(now),
        "edited_at": None,
        "deleted": False,
    }
    await parley.publish(
        topics.discussion(row["discussion_id"]),
        "response_posted",
        discussion_id=row["discussion_id"],
        user={"id": "poster", "name": "poster"},
        payload={"response": body},
    )


class Tally:
    """Reads the journal as the run goes: when each response was posted, when each of its
    reply and mention notifications was published (both on the log's clock)."""

    def __init__(self, start: Cursor) -> None:
        self.cursor = start
        self.posted: dict[str, int] = {}
        self.lags: list[float] = []
        self.first_ms = self.last_ms = 0

    async def read(self, event_log: Any) -> None:
        while events := await event_log.read_journal(self.cursor, 5000, 0.0):
            for event in events:
                if event.type == "response_posted":
                    self.posted[event.as_dict()["payload"]["response"]["id"]] = event.position.ms
                    self.first_ms = self.first_ms or event.position.ms
                elif event.type == "notification":
                    notification = event.as_dict()["payload"]["notification"]
                    posted_ms = self.posted.get(notification["response_id"])
                    if notification["type"] in ("reply", "mention") and posted_ms is not None:
                        self.lags.append((event.position.ms - posted_ms) / 1000)
                        self.last_ms = event.position.ms
            self.cursor = Cursor.parse(events[-1].cursor)

    def print(self, expected: int) -> None:
        span_s = max(0.001, (self.last_ms - self.first_ms) / 1000)
        print(f"  reply+mention notifications published {len(self.lags)} of {expected} expected")
        if self.lags:
            lags = self.lags
            print(
                f"  lag p50 {percentile(lags, 50):.3f} s   p95 {percentile(lags, 95):.3f} s   "
                f"max {max(lags):.3f} s   notifications/s {len(lags) / span_s:.0f} "
                f"(first post to last notification: {span_s:.1f} s)"
            )


@contextlib.contextmanager
def cpu_quota(cores: float | None) -> Iterator[None]:
    """This process (not the redis-server it started before) capped at `cores` of a core."""
    if cores is None:
        yield
        return
    from bench.common import CPU_CGROUP_ROOT, CpuQuota

    quota = CpuQuota(f"parley-notify-bench-{os.getpid()}", cores)
    quota.add(os.getpid())
    print(f"this process capped at {cores} of a core")
    try:
        yield
    finally:
        (CPU_CGROUP_ROOT / "cgroup.procs").write_text(str(os.getpid()))
        quota.remove()


async def run(args: argparse.Namespace, database_url: str, redis: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp, cpu_quota(args.cpu_quota):
        env = {"DATABASE_URL": database_url, "PARLEY_DATA_DIR": tmp, "PARLEY_RATE_LIMIT_PER_MIN": "0"}
        if redis is not None:
            env |= {"REDIS_URL": redis, "PARLEY_REDIS_PREFIX": f"bench-{uuid.uuid4().hex[:8]}"}
        app = create_app(Settings.from_env(env))
        async with app.test_app():
            parley = app.extensions["parley"]
            parents = await seed(parley, args.discussions, args.followers)
            tally = Tally(await parley.log.head())
            redis_cpu = await redis_cpu_s(redis)
            began, cpu = time.perf_counter(), time.process_time()
            sent = await feed(parley, parents, args.rate, args.seconds)
            fed_s = time.perf_counter() - began
            expected = sent + sent // 2  # a reply each, a mention every other
            deadline = time.monotonic() + args.drain_s
            while len(tally.lags) < expected and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                await tally.read(parley.log)
            print(
                f"{args.backend}: {sent} responses in {fed_s:.1f} s ({sent / fed_s:.0f}/s offered), "
                f"{args.discussions} discussions x {args.followers} followers"
            )
            tally.print(expected)
            used = time.process_time() - cpu
            print(
                f"  CPU of this process (feeder + worker + app), feed to drained: {used:.1f} s, "
                f"{used / max(1, sent) * 1000:.2f} ms per response"
            )
            if redis is not None:
                redis_cpu_after, scripts_after = await redis_cpu_s(redis)
                print(
                    f"  redis-server over the same time: CPU {redis_cpu_after - redis_cpu[0]:.1f} s, "
                    f"{scripts_after - redis_cpu[1]} script calls (EVAL + EVALSHA; the feeder's: {sent})"
                )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["embedded", "redis"], default="embedded")
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--discussions", type=int, default=50)
    parser.add_argument("--followers", type=int, default=10)
    parser.add_argument("--drain-s", type=float, default=120, help="how long to wait for the worker after feeding")
    parser.add_argument("--cpu-quota", type=float, help="cap this process at this fraction of a core (cgroup v1)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.backend == "embedded":
        with tempfile.TemporaryDirectory() as tmp:
            await run(args, f"sqlite+aiosqlite:///{tmp}/bench.db", None)
    else:
        with redis_url() as redis:
            async with postgres_database() as database_url:
                await run(args, database_url, redis)


if __name__ == "__main__":
    asyncio.run(main())
