"""Common ground end to end, against real server processes: the embedded log, Redis, and two
processes on one Redis. The analysis worker is reached only through the API (stances on
responses) and observed only through streams, REST and /metrics.

Absence is never asserted by waiting alone: where a test shows that something did *not*
happen (no run while another process holds a discussion), it first sees a later event that
the same worker produced after it would have happened.
"""

from __future__ import annotations

import asyncio
import random
import signal
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as redis

from app.analysis.rules import Counts, PropositionText, Thresholds, document
from app.infra.redis_keys import RedisKeys

from .support import Server, SseEvent, SseReader, bearer, sign
from .test_notifications import next_of, notification
from .test_stream import make_discussion, metric, open_stream

pytestmark = pytest.mark.slow

ARRIVAL_S = 15.0
ANALYSIS_EVENTS = ("analysis_refreshing", "analysis_updated")


@pytest.fixture(params=["embedded", "redis", "redis-postgres"])
def server(request: pytest.FixtureRequest, start_server: Callable[..., Server]) -> Server:
    if request.param == "embedded":
        return start_server()
    env = {
        "REDIS_URL": request.getfixturevalue("redis_url"),
        "PARLEY_REDIS_PREFIX": request.getfixturevalue("redis_prefix"),
    }
    if request.param == "redis-postgres":
        env["DATABASE_URL"] = request.getfixturevalue("postgres_url")
    return start_server(**env)


@pytest.fixture(params=["embedded", "redis-two-processes"])
def servers(request: pytest.FixtureRequest, start_server: Callable[..., Server]) -> tuple[Server, Server]:
    """Where a burst is posted: one embedded process, or two processes on one Redis (posts
    alternate between them; the stream is read from the second)."""
    env = {"PARLEY_CG_COMPUTE_DELAY_MS": "50"}  # slower runs: overlaps would be likelier
    if request.param == "embedded":
        only = start_server(**env)
        return only, only
    env.update(
        REDIS_URL=request.getfixturevalue("redis_url"), PARLEY_REDIS_PREFIX=request.getfixturevalue("redis_prefix")
    )
    return start_server(**env), start_server(**env)


def unique(name: str) -> str:
    """A user id of this test's own (the PostgreSQL database is shared by the session's tests)."""
    return f"{name}-{uuid.uuid4().hex[:6]}"


async def add_proposition(client: httpx.AsyncClient, server: Server, token: str, discussion: str, text: str) -> str:
    r = await client.post(
        f"{server.url}/api/discussions/{discussion}/propositions", json={"text": text}, headers=bearer(token)
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def take_stances(
    client: httpx.AsyncClient, server: Server, token: str, discussion: str, stances: dict[str, str]
) -> dict[str, Any]:
    r = await client.post(
        f"{server.url}/api/discussions/{discussion}/responses",
        json={"body": "Here is where I stand", "stances": stances},
        headers=bearer(token),
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def analysis_until(
    stream: SseReader, done: Callable[[dict[str, Any]], bool], seen: list[SseEvent] | None = None
) -> dict[str, Any]:
    """Read `analysis_updated` events until one's document satisfies `done`; keeps every
    analysis event read in `seen`."""
    async with asyncio.timeout(ARRIVAL_S):
        while True:
            event = await next_of(stream, *ANALYSIS_EVENTS, timeout_s=ARRIVAL_S)
            if seen is not None:
                seen.append(event)
            if event.event == "analysis_updated":
                payload: dict[str, Any] = event.json["payload"]
                if done(payload):
                    return payload


def figures(doc: dict[str, Any], proposition: str) -> tuple[int, int, int]:
    entry = next(p for p in doc["propositions"] if p["id"] == proposition)
    return entry["agree"], entry["disagree"], entry["pass"]


async def get_analysis(client: httpx.AsyncClient, server: Server, token: str, discussion: str) -> dict[str, Any]:
    r = await client.get(f"{server.url}/api/discussions/{discussion}/analysis", headers=bearer(token))
    assert r.status_code == 200, r.text
    return dict(r.json())


def assert_runs_never_overlap(seen: list[SseEvent]) -> None:
    """Each run publishes `analysis_refreshing` when it starts and `analysis_updated` when it
    ends, into one totally ordered log: overlapping runs would show two starts in a row."""
    kinds = [e.event for e in seen]
    first = kinds.index("analysis_refreshing")
    for before, after in zip(kinds[first:], kinds[first + 1 :], strict=False):
        assert before != after, kinds
    updates = [e.json["payload"] for e in seen if e.event == "analysis_updated"]
    starts = [e.json["payload"]["version"] for e in seen if e.event == "analysis_refreshing"]
    assert [u["version"] for u in updates] == sorted({u["version"] for u in updates})
    # Every run announced the version it replaced, and stored the next one.
    for start, update in zip(starts[len(starts) - len(updates) :], updates, strict=True):
        assert update["version"] == start + 1


async def test_stances_move_counts_and_the_latest_stance_wins(server: Server) -> None:
    alice, bob, carol = sign(unique("alice")), sign(unique("bob")), sign(unique("carol"))
    async with httpx.AsyncClient(timeout=10) as client:
        discussion = await make_discussion(client, server, alice)
        async with open_stream(server, carol, [discussion]) as stream:
            lanes = await add_proposition(client, server, alice, discussion, "Bike lanes make streets safer")
            seen: list[SseEvent] = []
            listed = await analysis_until(stream, lambda d: any(p["id"] == lanes for p in d["propositions"]), seen)
            assert figures(listed, lanes) == (0, 0, 0) and listed["version"] >= 1
            await take_stances(client, server, alice, discussion, {lanes: "agree"})
            await take_stances(client, server, bob, discussion, {lanes: "agree"})
            await take_stances(client, server, bob, discussion, {lanes: "disagree"})  # bob changes his mind
            await take_stances(client, server, carol, discussion, {lanes: "pass"})
            final = await analysis_until(stream, lambda d: figures(d, lanes) == (1, 1, 1), seen)
        assert final["participants"] == 3
        assert final["propositions"][0]["agreement"] == 0.5
        assert final["source"] == "computed" and final["computed_at"].endswith("Z")
        # REST returns the document exactly as the event carried it.
        assert await get_analysis(client, server, alice, discussion) == final
    assert_runs_never_overlap(seen)
    assert seen[0].event == "analysis_refreshing" and seen[0].json["payload"] == {"version": 0}
    # The worker is an owned task: a stopping server cancels it promptly and cleanly.
    assert server.process is not None
    server.stop()
    assert "did not stop" not in server.log() and "Traceback" not in server.log(), server.log()[-2000:]


async def test_a_burst_of_100_costs_few_runs_and_ends_equal_to_a_computation_from_scratch(
    servers: tuple[Server, Server],
) -> None:
    """Posted on both processes (or the one embedded), streamed from the second: a bounded
    number of runs (counted on /metrics), no two at once (a slow run makes overlaps likely if
    they could happen), and a final document equal to one computed here from what was posted."""
    first, second = servers
    targets = (first,) if first is second else (first, second)
    users = [f"user{i}" for i in range(20)]
    tokens = {user: sign(user) for user in users}
    rng = random.Random(10)
    async with httpx.AsyncClient(timeout=30) as client:
        discussion = await make_discussion(client, first, tokens["user0"])
        texts = ["Shade matters", "Cost matters", "Noise matters"]
        async with open_stream(second, tokens["user1"], [discussion]) as stream:
            propositions = [await add_proposition(client, first, tokens["user0"], discussion, t) for t in texts]
            await analysis_until(stream, lambda d: len(d["propositions"]) == 3)
            runs_before = sum([await metric(s, "parley_analysis_runs_total") for s in targets])
            plan = [
                (rng.choice(users), {p: rng.choice(["agree", "agree", "disagree", "pass"]) for p in propositions})
                for _ in range(100)
            ]
            latest: dict[tuple[str, str], tuple[int, str]] = {}
            gate = asyncio.Semaphore(8)

            async def post(index: int, user: str, stances: dict[str, str]) -> None:
                async with gate:
                    posted = await take_stances(
                        client, targets[index % len(targets)], tokens[user], discussion, stances
                    )
                for proposition, stance in stances.items():
                    key = (user, proposition)
                    # The latest response (highest id) of each user wins, whatever order they landed in.
                    if key not in latest or latest[key][0] < int(posted["id"]):
                        latest[key] = (int(posted["id"]), stance)

            await asyncio.gather(*(post(i, user, stances) for i, (user, stances) in enumerate(plan)))
            counts: dict[str, dict[str, int]] = {p: {"agree": 0, "disagree": 0, "pass": 0} for p in propositions}
            for (_, proposition), (_, stance) in latest.items():
                counts[proposition][stance] += 1
            expected = document(
                version=0,
                computed_at=None,
                source="computed",
                participants=len({user for user, _ in latest}),
                propositions=[PropositionText(p, t) for p, t in zip(propositions, texts, strict=True)],
                counts={p: Counts(c["agree"], c["disagree"], c["pass"]) for p, c in counts.items()},
                thresholds=Thresholds(),
            )

            def same_figures(doc: dict[str, Any]) -> bool:
                keys = ("participants", "propositions", "common_ground", "divisive")
                return all(doc[k] == expected[k] for k in keys)

            seen: list[SseEvent] = []
            final = await analysis_until(stream, same_figures, seen)
        runs = sum([await metric(s, "parley_analysis_runs_total") for s in targets]) - runs_before
        stored = await get_analysis(client, first, tokens["user0"], discussion)
    assert stored == final
    print(f"burst of 100: {runs:.0f} recomputations, {len(seen)} analysis events")
    assert 1 <= runs <= 10, runs
    assert_runs_never_overlap(seen)


async def test_a_discussion_held_by_another_process_is_not_computed_until_released(
    start_server: Callable[..., Server], redis_url: str, redis_prefix: str
) -> None:
    """The per-discussion run lease: while another holder has it (here the test, standing in
    for a process still finishing a run), the worker does not compute that discussion, though
    it goes on with others; released, the discussion is computed."""
    server = start_server(REDIS_URL=redis_url, PARLEY_REDIS_PREFIX=redis_prefix)
    alice = sign("alice")
    held_key = RedisKeys(redis_prefix).lease("analysis-run:{}")
    keys = redis.Redis.from_url(redis_url)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            held = await make_discussion(client, server, alice)
            free = await make_discussion(client, server, alice)
            await keys.set(held_key.format(held), "another-process", px=60_000)
            async with open_stream(server, alice, [held, free]) as stream:
                p_held = await add_proposition(client, server, alice, held, "Held")
                await take_stances(client, server, alice, held, {p_held: "agree"})
                p_free = await add_proposition(client, server, alice, free, "Free")
                await take_stances(client, server, alice, free, {p_free: "agree"})
                seen: list[SseEvent] = []
                await analysis_until(
                    stream,
                    lambda d: (
                        figures(d, p_free) == (1, 0, 0)
                        if d["propositions"] and d["propositions"][0]["id"] == p_free
                        else False
                    ),
                    seen,
                )
                # The held discussion was due first, yet nothing of it was announced.
                assert all(e.json["discussion_id"] == free for e in seen), [e.json["discussion_id"] for e in seen]
                await keys.delete(held_key.format(held))
                done = await analysis_until(
                    stream, lambda d: bool(d["propositions"]) and d["propositions"][0]["id"] == p_held
                )
                assert figures(done, p_held) == (1, 0, 0)
    finally:
        await keys.aclose()


async def test_common_ground_notifies_followers_through_the_analysis(server: Server) -> None:
    """Three people agree: the analysis puts the proposition into common ground, and the
    follower (bob) is notified through the notification worker; dan switched it off."""
    alice, bob, carol, dan, erin = (sign(unique(n)) for n in ("alice", "bob", "carol", "dan", "erin"))
    async with httpx.AsyncClient(timeout=10) as client:
        discussion = await make_discussion(client, server, alice)
        for follower in (bob, dan):
            r = await client.put(f"{server.url}/api/discussions/{discussion}/follow", headers=bearer(follower))
            assert r.status_code == 200
        r = await client.put(
            server.url + "/api/notification-preferences", json={"common_ground": False}, headers=bearer(dan)
        )
        assert r.status_code == 200
        trees = await add_proposition(client, server, alice, discussion, "Old trees are worth keeping")
        async with open_stream(server, bob, []) as bob_stream, open_stream(server, dan, []) as dan_stream:
            for voter in (alice, carol, erin):
                await take_stances(client, server, voter, discussion, {trees: "agree"})
            got = await notification(bob_stream, timeout_s=ARRIVAL_S)
            # Dan's stream: a later notification proves the common-ground one was skipped for him.
            reply_to = await take_stances(client, server, dan, discussion, {})
            r = await client.post(
                f"{server.url}/api/discussions/{discussion}/responses",
                json={"body": "Agreed, dan", "parent_id": reply_to["id"]},
                headers=bearer(alice),
            )
            assert r.status_code == 201
            dans = await notification(dan_stream, timeout_s=ARRIVAL_S)
    assert got["type"] == "common_ground" and got["discussion_id"] == discussion
    assert got["excerpt"] == "Old trees are worth keeping"
    assert dans["type"] == "reply"
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(server.url + "/api/notifications", headers=bearer(bob))
    assert [n["type"] for n in r.json()] == ["common_ground"]


async def holder_and_other(client: httpx.AsyncClient, servers: tuple[Server, Server]) -> tuple[Server, Server]:
    """Which process holds the analysis lease: the one whose warm-up run shows in /metrics."""
    owner = sign(unique("owner"))
    warm = await make_discussion(client, servers[0], owner)
    await add_proposition(client, servers[0], owner, warm, "Warm-up")
    deadline = asyncio.get_running_loop().time() + ARRIVAL_S
    while (await get_analysis(client, servers[0], owner, warm))["version"] == 0:
        assert asyncio.get_running_loop().time() < deadline, "the warm-up was never analysed"
        await asyncio.sleep(0.1)
    runs = [await metric(s, "parley_analysis_runs_total") for s in servers]
    return (servers[0], servers[1]) if runs[0] > runs[1] else (servers[1], servers[0])


async def test_a_holder_killed_before_its_run_loses_nothing(
    start_server: Callable[..., Server], redis_url: str, redis_prefix: str
) -> None:
    """The holder has read the stance (and saved its checkpoint) but not run yet (a long
    debounce) when it is SIGKILLed: its successor re-reads from the checkpoint, which never
    passes an uncovered change, and computes the discussion."""
    env = {
        "REDIS_URL": redis_url,
        "PARLEY_REDIS_PREFIX": redis_prefix,
        "PARLEY_CG_LEASE_S": "1",
        "PARLEY_CG_DEBOUNCE_MS": "3000",
    }
    servers = (start_server(**env), start_server(**env))
    alice = sign(unique("alice"))
    async with httpx.AsyncClient(timeout=10) as client:
        holder, other = await holder_and_other(client, servers)
        discussion = await make_discussion(client, other, alice)
        lanes = await add_proposition(client, other, alice, discussion, "Bike lanes")
        async with open_stream(other, alice, [discussion]) as stream:
            await analysis_until(stream, lambda d: bool(d["propositions"]))
            await take_stances(client, other, alice, discussion, {lanes: "agree"})
            await asyncio.sleep(0.5)  # the holder reads it at once and saves its checkpoint
            holder.stop(signal.SIGKILL)
            done = await analysis_until(stream, lambda d: figures(d, lanes) == (1, 0, 0))
    assert done["participants"] == 1


async def test_a_stalled_holder_is_replaced_and_publishes_nothing_when_it_wakes(
    start_server: Callable[..., Server], redis_url: str, redis_prefix: str
) -> None:
    """The holder is frozen (SIGSTOP) in the middle of a run. Its leases expire, the other
    process takes over and computes the discussion; woken up (SIGCONT), the stale run finds
    its run lease gone and publishes nothing: there is never a second, overlapping result."""
    env = {
        "REDIS_URL": redis_url,
        "PARLEY_REDIS_PREFIX": redis_prefix,
        "PARLEY_CG_LEASE_S": "3",
        "PARLEY_CG_COMPUTE_DELAY_MS": "1500",
    }
    servers = (start_server(**env), start_server(**env))
    alice, bob, carol = sign("alice"), sign("bob"), sign("carol")
    async with httpx.AsyncClient(timeout=10) as client:
        holder, other = await holder_and_other(client, servers)
        assert holder.process is not None
        discussion = await make_discussion(client, other, alice)
        async with open_stream(other, carol, [discussion]) as stream:
            lanes = await add_proposition(client, other, alice, discussion, "Bike lanes")
            await analysis_until(stream, lambda d: bool(d["propositions"]))
            holder_runs = await metric(holder, "parley_analysis_runs_total")
            await take_stances(client, other, alice, discussion, {lanes: "agree"})
            started = await next_of(stream, "analysis_refreshing", timeout_s=ARRIVAL_S)
            holder.process.send_signal(signal.SIGSTOP)
            try:
                seen = [started]
                taken_over = await analysis_until(stream, lambda d: figures(d, lanes) == (1, 0, 0), seen)
            finally:
                holder.process.send_signal(signal.SIGCONT)
            await take_stances(client, other, bob, discussion, {lanes: "agree"})
            final = await analysis_until(stream, lambda d: figures(d, lanes) == (2, 0, 0), seen)
        assert await metric(holder, "parley_analysis_runs_total") == holder_runs
    kinds = [(e.event, e.json["payload"]["version"]) for e in seen]
    v = started.json["payload"]["version"]
    # The frozen run's start, the successor's run, then the next run: no stale update anywhere.
    assert kinds == [
        ("analysis_refreshing", v),
        ("analysis_refreshing", v),
        ("analysis_updated", v + 1),
        ("analysis_refreshing", v + 1),
        ("analysis_updated", v + 2),
    ], kinds
    assert (taken_over["version"], final["version"]) == (v + 1, v + 2)
