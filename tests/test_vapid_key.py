"""The VAPID key generated into the data dir when none is configured: processes starting at once
(WEB_CONCURRENCY workers) all end up with the one key, and none reads a half-written file (a CI
run had a second worker fail its start-up on "Could not deserialize key data")."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from app.notify.webpush import VAPID_KEY_FILE, load_vapid, vapid_public_key


def test_starting_together_every_process_gets_the_one_key(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        for attempt in range(40):
            data_dir = tmp_path / f"data-{attempt}"
            keys = list(pool.map(lambda d: vapid_public_key(load_vapid(None, d)), [data_dir] * 8))
            assert len(set(keys)) == 1
            assert [p.name for p in data_dir.iterdir()] == [VAPID_KEY_FILE]  # no temporary left
    # And later starts read it.
    assert vapid_public_key(load_vapid(None, tmp_path / "data-0")) == vapid_public_key(
        load_vapid(None, tmp_path / "data-0")
    )
