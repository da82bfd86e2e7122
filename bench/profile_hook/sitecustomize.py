"""Profiling hooks for a server under `bench/run.py --profile`, loaded through PYTHONPATH so that
nothing in `app/` changes. Only active when PARLEY_BENCH_PROFILE_DIR is set.

- SIGUSR1: a tracemalloc snapshot (start the process with PYTHONTRACEMALLOC=N); from the second
  one on, also the difference to the first, by line: where the memory of N connections went.
- SIGUSR2: start cProfile on the main thread (the event loop's); the next SIGUSR2 stops it and
  writes the top functions by own time: where the CPU of each delivery went.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import signal
import tracemalloc
from pathlib import Path
from types import FrameType

_DIR = os.environ.get("PARLEY_BENCH_PROFILE_DIR")


def _install(directory: Path) -> None:
    snapshots: list[tracemalloc.Snapshot] = []
    profiler: list[cProfile.Profile] = []

    def snapshot(_signum: int, _frame: FrameType | None) -> None:
        if not tracemalloc.is_tracing():
            return
        current = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        snapshots.append(current)
        lines = [f"snapshot {len(snapshots)}: traced {tracemalloc.get_traced_memory()[0] / 2**20:.1f} MiB"]
        if len(snapshots) > 1:
            lines.append("top growth since the first snapshot, by line:")
            lines += [str(stat) for stat in current.compare_to(snapshots[0], "lineno")[:40]]
            lines.append("by file:")
            lines += [str(stat) for stat in current.compare_to(snapshots[0], "filename")[:25]]
        (directory / f"tracemalloc-{len(snapshots)}.txt").write_text("\n".join(lines) + "\n")

    def toggle_profile(_signum: int, _frame: FrameType | None) -> None:
        if not profiler:
            profiler.append(cProfile.Profile())
            profiler[0].enable()
            return
        running = profiler.pop()
        running.disable()
        out = io.StringIO()
        stats = pstats.Stats(running, stream=out)
        stats.sort_stats("tottime").print_stats(45)
        stats.sort_stats("cumulative").print_stats(45)
        count = len(list(directory.glob("cprofile-*.txt"))) + 1
        (directory / f"cprofile-{count}.txt").write_text(out.getvalue())

    signal.signal(signal.SIGUSR1, snapshot)
    signal.signal(signal.SIGUSR2, toggle_profile)


if _DIR:
    Path(_DIR).mkdir(parents=True, exist_ok=True)
    _install(Path(_DIR))
