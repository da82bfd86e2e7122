"""Prometheus metrics, one registry per app (so two apps in one test process never collide).

With several Hypercorn workers each process exposes its own figures at /metrics; scrape each
process, or run one process per container as the Procfile does.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

# `*_created` series double the output and nobody reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge(
            "parley_connections", "Open real-time connections, by transport", ["transport"], registry=r
        )
        self.subscriptions = Gauge("parley_subscriptions", "Live subscriptions held by this process's hub", registry=r)
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

    def render(self) -> bytes:
        return generate_latest(self.registry)
