"""Metrics that add up across workers: with WEB_CONCURRENCY=2 one scrape, answered by either
worker, shows what both did (app/infra/metrics.py, multiprocess mode)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from .support import Server, bearer, sign

pytestmark = pytest.mark.slow

POSTS = 24


def published(families: list[object], event_type: str) -> float:
    total = 0.0
    for family in families:
        for sample in getattr(family, "samples", []):
            if sample.name == "parley_events_published_total" and sample.labels.get("type") == event_type:
                total += sample.value
    return total


@pytest.mark.parametrize("directory", ["given", "fresh"])
async def test_events_published_through_both_workers_add_up_in_one_scrape(
    start_server: Callable[..., Server], redis_url: str, redis_prefix: str, tmp_path: Path, directory: str
) -> None:
    env = {"REDIS_URL": redis_url, "PARLEY_REDIS_PREFIX": redis_prefix, "WEB_CONCURRENCY": "2"}
    temp = tmp_path / "tmp"
    temp.mkdir()
    if directory == "given":
        metrics_dir = tmp_path / "metrics"
        metrics_dir.mkdir()
        # A previous run's file: cleaned at start, or its counts would be added to this run's.
        (metrics_dir / "counter_999999.db").write_bytes(b"stale")
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    else:
        env["TMPDIR"] = str(temp)  # where `parley serve` makes its own
    server = start_server(**env)
    if directory == "fresh":
        [metrics_dir] = temp.glob("parley-metrics-*")
    alice = sign("alice")
    headers = bearer(alice)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        r = await client.post("/api/discussions", json={"title": "Trees"}, headers=headers)
        discussion = r.json()["id"]
    # One connection per post: the kernel spreads new connections over both workers.
    for i in range(POSTS):
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            r = await client.post(f"/api/discussions/{discussion}/responses", json={"body": f"r{i}"}, headers=headers)
            assert r.status_code == 201, r.text
    assert not (metrics_dir / "counter_999999.db").exists()
    # Both workers published some (each keeps its own file), ...
    per_worker = [
        published(list(MultiProcessCollector.merge([str(path)], accumulate=True)), "response_posted")  # type: ignore[no-untyped-call]
        for path in sorted(metrics_dir.glob("counter_*.db"))
    ]
    assert len([count for count in per_worker if count > 0]) == 2, per_worker
    # ... and every scrape, whichever worker answers it, shows all of them.
    for _ in range(6):
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            text = (await client.get("/metrics")).text
        families = list(text_string_to_metric_families(text))
        assert published(families, "response_posted") == POSTS
        assert "parley_delivery_latency_seconds_bucket" in text
        assert "parley_connections" in text
    server.stop()
    if directory == "fresh":
        assert not metrics_dir.exists()  # removed when the server stops
