"""The workers in a process of their own: web processes started with PARLEY_WORKERS=0 serve the
API and the streams, `parley work` processes run the notification and analysis workers (and
the retention sweeper). Real processes on a real Redis; observed through the API, the
streams, /metrics and the lease keys in Redis.

Absence is never asserted by waiting: that a web process runs no worker is read from Redis at
once (a process running them sets their checkpoints before it answers /readyz).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as redis

from app.infra.redis_keys import RedisKeys
from app.main import WORKERS_READY
from app.settings import ConfigError, Settings

from .support import START_TIMEOUT_S, Server, free_port, server_env, sign
from .test_common_ground import add_proposition, analysis_until, figures, take_stances
from .test_notifications import notification, notifications, respond
from .test_startup_failures import assert_said_plainly, parley
from .test_stream import make_discussion, open_stream

pytestmark = pytest.mark.slow

# Only bounds a failure: a `parley work` told to stop waits at most ~5 s for its tasks.
STOP_TIMEOUT_S = 20.0
HOLDS_NOTIFY_LEASE = "notification worker: this process holds the lease"


class Worker:
    """A real `parley work` process (stdout and stderr in a log file of its own)."""

    def __init__(self, workdir: Path, env: dict[str, str], name: str) -> None:
        self.workdir = workdir
        self.env = env
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app", "work"], cwd=self.workdir, env=self.env, stdout=log, stderr=log
            )
        self.wait_for(WORKERS_READY)
        return self

    def wait_for(self, text: str, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until the log says `text` (failing if the process exits first)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.log():
                return
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"parley work exited with {self.process.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise TimeoutError(f"parley work never said {text!r}:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Send `sig` and wait for the exit; its status (None if it was not running)."""
        if self.process is None:
            return None
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        return process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start `parley work` processes (on the same database as `start_server`'s); every one is
    stopped after the test."""
    workers: list[Worker] = []

    def start(**env: str) -> Worker:
        worker = Worker(
            tmp_path, server_env(tmp_path, free_port(), PARLEY_LOG_LEVEL="INFO", **env), f"work-{len(workers)}"
        )
        workers.append(worker)
        return worker.start()

    yield start
    for worker in workers:
        worker.stop(signal.SIGKILL)


async def lease_keys(redis_url: str, prefix: str, *names: str) -> tuple[int, int]:
    """How many of the workers' checkpoints and leases (by name) exist in Redis."""
    keys = RedisKeys(prefix)
    client = redis.Redis.from_url(redis_url)
    try:
        checkpoints = int(await client.exists(*(keys.checkpoint(n) for n in names)))
        leases = int(await client.exists(*(keys.lease(n) for n in names)))
    finally:
        await client.aclose()
    return checkpoints, leases


async def test_a_web_process_without_workers_and_a_worker_process(
    start_server: Callable[..., Server], start_worker: Callable[..., Worker], redis_url: str, redis_prefix: str
) -> None:
    """The reply and the stance change posted to the web process come back on its streams,
    made by the worker process; SIGTERM stops the worker at once, leases released."""
    env = {"REDIS_URL": redis_url, "PARLEY_REDIS_PREFIX": redis_prefix}
    web = start_server(PARLEY_WORKERS="0", **env)
    # Ready, and no worker of its own: one would have set its checkpoint before serving.
    assert await lease_keys(redis_url, redis_prefix, "notify", "analysis") == (0, 0)
    worker = start_worker(**env)
    assert (await lease_keys(redis_url, redis_prefix, "notify", "analysis"))[0] == 2
    alice, bob, carol = sign("alice"), sign("bob"), sign("carol")
    async with httpx.AsyncClient(timeout=10) as client:
        discussion = await make_discussion(client, web, carol)
        mine = await respond(client, web, bob, discussion, "Plant more oaks.")
        async with open_stream(web, bob, [discussion]) as stream:
            reply = await respond(client, web, carol, discussion, "Why oaks?", parent=mine["id"])
            got = await notification(stream)
            assert got["type"] == "reply" and got["response_id"] == reply["id"]
            lanes = await add_proposition(client, web, alice, discussion, "Oaks outlive us")
            await take_stances(client, web, alice, discussion, {lanes: "agree"})
            updated = await analysis_until(
                stream, lambda d: any(p["id"] == lanes and p["agree"] == 1 for p in d["propositions"])
            )
        assert figures(updated, lanes) == (1, 0, 0)
        # The web process ran no analysis: the worker process did.
        exposed = (await client.get(web.url + "/metrics")).text.splitlines()
        assert "parley_analysis_runs_total 0.0" in exposed
        assert [n["id"] for n in await notifications(client, web, bob)] == [got["id"]]
    assert worker.stop(signal.SIGTERM) == 0, worker.log()
    assert "Traceback" not in worker.log()
    # Released on the way out (not left to expire): a successor starts at once.
    assert (await lease_keys(redis_url, redis_prefix, "notify", "analysis"))[1] == 0


async def test_a_second_worker_takes_over_from_a_killed_one_losing_nothing(
    start_server: Callable[..., Server], start_worker: Callable[..., Worker], redis_url: str, redis_prefix: str
) -> None:
    """SIGKILL the `parley work` holding the notification lease in the middle of a batch: the
    second one takes the lease once it expires and every notification is stored once and
    reaches the stream (stored before delivered)."""
    count = 60
    env = {
        "REDIS_URL": redis_url,
        "PARLEY_REDIS_PREFIX": redis_prefix,
        "PARLEY_NOTIFY_LEASE_S": "1.5",
        # Slow the worker so the burst is one long batch the kill lands in the middle of.
        "PARLEY_NOTIFY_EVENT_DELAY_MS": "80",
    }
    web = start_server(PARLEY_WORKERS="0", **env)
    first = start_worker(**env)
    first.wait_for(HOLDS_NOTIFY_LEASE)
    second = start_worker(**env)
    bob, carol = sign("bob"), sign("carol")
    received: dict[str, int] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        discussion = await make_discussion(client, web, carol)
        mine = await respond(client, web, bob, discussion, "Tell me")
        async with open_stream(web, bob, []) as stream:
            posted = [
                (await respond(client, web, carol, discussion, f"reply {i}", parent=mine["id"]))["id"]
                for i in range(count)
            ]
            async with asyncio.timeout(30):
                while not await notifications(client, web, bob, limit="200"):  # the batch has begun
                    await asyncio.sleep(0.02)
            first.stop(signal.SIGKILL)
            stored_at_kill = len(await notifications(client, web, bob, limit="200"))
            assert 0 < stored_at_kill < count, "the kill must land mid-batch for this test to mean anything"
            async with asyncio.timeout(60):
                while len(received) < count:
                    got = await notification(stream, timeout_s=60)
                    received[got["id"]] = received.get(got["id"], 0) + 1
        listed = await notifications(client, web, bob, limit="200")
    assert HOLDS_NOTIFY_LEASE in second.log()
    assert len(listed) == count
    assert sorted(n["response_id"] for n in listed) == sorted(posted)
    assert set(received) == {n["id"] for n in listed}


def test_embedded_refuses_to_leave_the_workers_to_another_process(tmp_path: Path) -> None:
    result = parley(tmp_path, "serve", PARLEY_WORKERS="0")
    lines = assert_said_plainly(result, "PARLEY_WORKERS=0")
    assert result.returncode == 1 and "REDIS_URL" in lines[0]


def test_work_refuses_to_start_without_redis(tmp_path: Path) -> None:
    result = parley(tmp_path, "work")
    assert_said_plainly(result, "REDIS_URL")
    assert result.returncode == 1


def test_the_setting() -> None:
    assert Settings.from_env({}).run_workers is True
    assert Settings.from_env({"PARLEY_WORKERS": "1"}).run_workers is True
    assert Settings.from_env({"PARLEY_WORKERS": "0"}).run_workers is False
    with pytest.raises(ConfigError, match="PARLEY_WORKERS"):
        Settings.from_env({"PARLEY_WORKERS": "2"})


def test_help_stays_fast_to_load() -> None:
    """`parley work` is there, and `parley --help` still loads none of the app."""
    probe = "import sys; from app import cli; print('quart' in sys.modules, 'sqlalchemy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    usage = subprocess.run([sys.executable, "-m", "app", "--help"], capture_output=True, text=True, check=True).stdout
    assert "work" in usage
