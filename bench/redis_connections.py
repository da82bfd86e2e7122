"""Redis client connections held by one `parley serve` process (WEB_CONCURRENCY=1).

    python bench/redis_connections.py [--burst 400] [--concurrency 40]

Starts a private redis-server and one server on it (REDIS_URL), and counts `CLIENT LIST`
(minus this script's own connection) at three moments: idle after start-up (every background
task running: the hub's tail, both workers' journal reads, leases, active users, presence),
with one SSE stream open after a few posts, and right after a burst of posts sent `concurrency`
at a time (the pool grows with concurrent use, up to its size). Each line also lists the last
command of every connection: the blocking readers show as `xread`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import bearer, free_port, private_redis, server_env, sign, wait_for_port  # noqa: E402

SETTLE_S = 6.0


def count(admin: redis.Redis, label: str) -> None:
    mine = admin.client_id()
    others = [client for client in admin.client_list() if int(client["id"]) != mine]
    print(f"{label}: {len(others)} connections, last commands {sorted(c['cmd'] for c in others)}", flush=True)


def hold_stream(base: str, headers: dict[str, str], discussion: str, stop: threading.Event) -> None:
    with (
        httpx.Client(base_url=base, headers=headers, timeout=30) as client,
        client.stream("GET", f"/stream?discussion={discussion}") as response,
    ):
        for _ in response.iter_bytes():
            if stop.is_set():
                return


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=40)
    args = parser.parse_args()
    with private_redis() as url, tempfile.TemporaryDirectory() as workdir:
        admin = redis.Redis.from_url(url)
        port = free_port()
        env = server_env(Path(workdir), port, REDIS_URL=url, WEB_CONCURRENCY="1")
        server = subprocess.Popen([sys.executable, "-m", "app", "serve"], env=env, cwd=workdir)
        stop = threading.Event()
        try:
            wait_for_port(port, process=server)
            time.sleep(SETTLE_S)
            count(admin, "idle after start-up")
            base, headers = f"http://127.0.0.1:{port}", bearer(sign("alice", "Alice"))
            with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
                discussion = client.post("/api/discussions", json={"title": "connections"}).json()["id"]
                threading.Thread(target=hold_stream, args=(base, headers, discussion, stop), daemon=True).start()
                for index in range(5):
                    client.post(f"/api/discussions/{discussion}/responses", json={"body": f"post {index}"})
                time.sleep(3)
                count(admin, "one stream open, after 5 posts")
            limits = httpx.Limits(max_connections=args.concurrency)
            with (
                httpx.Client(base_url=base, headers=headers, timeout=30, limits=limits) as client,
                ThreadPoolExecutor(args.concurrency) as pool,
            ):
                path = f"/api/discussions/{discussion}/responses"
                list(pool.map(lambda i: client.post(path, json={"body": f"burst {i}"}), range(args.burst)))
            count(admin, f"after {args.burst} posts, {args.concurrency} at a time")
        finally:
            stop.set()
            server.terminate()
            server.wait(30)
        count(admin, "after the server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
