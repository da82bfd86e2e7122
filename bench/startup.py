"""Start-up time (issue 13, goal 2): `parley --help`, and from process start to the port
accepting connections, each the median of `--runs` (the machine is shared: medians, plus the
range).

The server is the embedded default on a SQLite file migrated by a first start that is not
counted (a restart's case, the herd's: the database is at head). `--backend redis` adds a
private redis-server. The server runs on core 0 (`taskset`), the poller here on core 1; the
port is polled every 5 ms.

    python -m bench.startup --runs 10
    python -X importtime -m app --help 2> imports.txt   # where the import time goes
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.backing import private_redis  # noqa: E402
from bench.common import CLIENT_CORE, ServerProcess, cpu_seconds, fmt_table, free_port, pin_to, workdir  # noqa: E402

POLL_S = 0.005


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_help(runs: int, code: Path) -> tuple[list[float], list[float]]:
    """Wall and CPU time of `parley --help` (`python -m app --help`, as the entry point runs it)."""
    command = ["taskset", "-c", "0", sys.executable, "-m", "app", "--help"]
    times: list[float] = []
    cpu: list[float] = []
    for _ in range(runs):
        started, cpu0 = time.perf_counter(), children_cpu_s()
        subprocess.run(command, cwd=code, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - started)
        cpu.append(children_cpu_s() - cpu0)
    return times, cpu


def accepting(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def time_listen(server: ServerProcess, runs: int) -> tuple[list[float], list[float]]:
    """Wall time from process start to the port accepting, and the server's CPU time by then
    (user + system, /proc: what the start costs whatever else shares the machine)."""
    times: list[float] = []
    cpu: list[float] = []
    for _ in range(runs):
        log = (server.workdir / "startup.log").open("ab")
        started = time.perf_counter()
        process = subprocess.Popen(
            server.command(), cwd=server.workdir, env=server.environment(), stdout=log, stderr=log
        )
        try:
            while not accepting(server.port):
                if process.poll() is not None:
                    raise RuntimeError(f"server exited with {process.returncode}: see {server.workdir}/startup.log")
                if time.perf_counter() - started > 60:
                    raise TimeoutError("not listening after 60 s")
                time.sleep(POLL_S)
            times.append(time.perf_counter() - started)
            cpu.append(cpu_seconds(process.pid))
        finally:
            process.terminate()
            process.wait(30)
            log.close()
    return times, cpu


def row(what: str, times: list[float]) -> dict[str, object]:
    return {
        "what": what,
        "runs": len(times),
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--backend", choices=["embedded", "redis"], default="embedded")
    parser.add_argument(
        "--code", type=Path, help="run the Parley server from this checkout instead (a before/after in one window)"
    )
    args = parser.parse_args()
    pin_to(CLIENT_CORE)
    help_wall, help_cpu = time_help(args.runs, args.code or ROOT)
    rows = [row("parley --help, wall", help_wall), row("parley --help, CPU", help_cpu)]
    with workdir() as directory, contextlib.ExitStack() as stack:
        env: dict[str, str] = {}
        if args.code is not None:
            env["PYTHONPATH"] = str(args.code.resolve())
        if args.backend == "redis":
            env["REDIS_URL"] = stack.enter_context(private_redis(directory))
        server = ServerProcess("parley", free_port(), directory, env_overrides=env)
        server.start(timeout_s=60)  # the first start migrates the new SQLite file: not counted
        server.stop()
        wall, cpu = time_listen(server, args.runs)
        rows.append(row(f"start to listening ({args.backend}), wall", wall))
        rows.append(row(f"start to listening ({args.backend}), server CPU", cpu))
    print(fmt_table(rows, ["what", "runs", "median_s", "min_s", "max_s"]))
    print(json.dumps({"workload": "startup", "backend": args.backend, "at": time.time(), "rows": rows}))


if __name__ == "__main__":
    main()
