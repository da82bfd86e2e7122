"""Prometheus metrics, one registry per app (so two apps in one test process never collide).

Several workers (WEB_CONCURRENCY > 1): `parley serve` gives them one shared directory in
PROMETHEUS_MULTIPROC_DIR before spawning them (`shared_directory`), so prometheus_client keeps
every value in a per-process file there and any worker's /metrics sums them all: a scrape sees
the whole service, whichever worker answers. Gauges of live state (open connections) count
only live processes (`livesum`); a worker that exits is marked dead by the parent.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

# `*_created` series double the output and nobody reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
# What people wait for in the page (client beacons): 5 s is SC-007's bound, so it is an edge.
CLIENT_WAIT_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge(
            "parley_connections",
            "Open real-time connections, by transport",
            ["transport"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.subscriptions = Gauge(
            "parley_subscriptions", "Live subscriptions held by the hubs", registry=r, multiprocess_mode="livesum"
        )
        self.published = Counter(
            "parley_events_published", "Events appended to the log by this process", ["type"], registry=r
        )
        self.delivered = Counter("parley_events_delivered", "Events handed to connections by this process", registry=r)
        self.delivery_latency = Histogram(
            "parley_delivery_latency_seconds",
            "From an event's log time to its hand-off to this process's connections",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.dropped = Counter(
            "parley_dropped_consumers", "Connections dropped for falling behind, by reason", ["reason"], registry=r
        )
        self.push_attempts = Counter("parley_push_attempts", "Web Push sends, by outcome", ["outcome"], registry=r)
        self.analysis_runs = Counter(
            "parley_analysis_runs", "Common-ground recomputations this process finished and published", registry=r
        )
        self.analysis_seconds = Histogram(
            "parley_analysis_seconds",
            "One recomputation, from `analysis_refreshing` to `analysis_updated`",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        # Set by whichever process holds the notification worker's lease; with several
        # workers, a scrape reports the most recent value of the live ones.
        self.notify_lag = Gauge(
            "parley_notify_lag_seconds",
            "Age of the newest event the notification worker has handled (0 when caught up)",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        # Refreshed by every scrape of /metrics and every /readyz (app/api/ops.py).
        self.backend_up = Gauge(
            "parley_backend_up",
            "1 while a backing service answers (database, event_log), else 0",
            ["backend"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )

        # Reported by the pages themselves (`POST /api/beacons`, app/api/beacons.py); label
        # values come from fixed enums, never from the client's text.
        self.client_page_loads = Counter(
            "parley_client_page_loads", "Pages opened (the denominator of the manual-reload rate)", registry=r
        )
        self.client_reconnects = Counter(
            "parley_client_reconnects",
            "Connections lost and regained by a page, by whether within 5 s (SC-007)",
            ["within_5s"],
            registry=r,
        )
        self.client_reconnect_failures = Counter(
            "parley_client_reconnect_failures", "Pages that gave up reconnecting (offered Refresh)", registry=r
        )
        self.client_reconnect_attempts = Counter(
            "parley_client_reconnect_attempts", "Connection attempts pages made to reconnect", registry=r
        )
        self.client_reconnect_seconds = Histogram(
            "parley_client_reconnect_seconds",
            "From a page losing its connection to having it again",
            buckets=CLIENT_WAIT_BUCKETS_S,
            registry=r,
        )
        self.client_manual_reloads = Counter(
            "parley_client_manual_reloads", "Pages reloaded by hand after losing their connection (SC-008)", registry=r
        )
        self.client_push_permission = Counter(
            "parley_client_push_permission",
            "Web Push permission prompts, by outcome: asked, granted, denied (SC-005)",
            ["outcome"],
            registry=r,
        )
        self.client_push_clicks = Counter(
            "parley_client_push_clicks", "Push notifications clicked (SC-006)", registry=r
        )
        self.client_first_event_seconds = Histogram(
            "parley_client_first_event_seconds",
            "From a page's start to its first live event",
            buckets=CLIENT_WAIT_BUCKETS_S,
            registry=r,
        )

    def render(self) -> bytes:
        directory = os.environ.get(MULTIPROC_ENV)
        if not directory:
            return generate_latest(self.registry)
        # Every worker's files, summed; a fresh registry each time, as prometheus_client asks.
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def shared_directory(create: bool = True) -> Iterator[Path | None]:
    """The directory the workers about to be spawned keep their metrics in: the operator's
    PROMETHEUS_MULTIPROC_DIR emptied of a previous run's files (stale counters would add up
    forever), else (`create`) a fresh temporary one, removed afterwards. Must be set before a
    worker imports prometheus_client, which picks its value store once, at import."""
    given = os.environ.get(MULTIPROC_ENV)
    if not given and not create:
        yield None
        return
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
        yield directory
        return
    directory = Path(tempfile.mkdtemp(prefix="parley-metrics-"))
    os.environ[MULTIPROC_ENV] = str(directory)
    try:
        yield directory
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)


def process_exited(pid: int) -> None:
    """Drop an exited worker's live gauges (its counters stay: they are history)."""
    if os.environ.get(MULTIPROC_ENV):
        mark_process_dead(pid)  # type: ignore[no-untyped-call]
