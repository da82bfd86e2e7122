"""Summarise py-spy's collapsed stacks (`py-spy record --format raw`): the functions with the
most samples, inclusive (anywhere on the stack) and self (on top), as % of all samples; or,
with `--parts`, the samples by part of the server (the handler, each background worker, the
access log, Quart, Hypercorn, SQLAlchemy, the SQLite thread, the event loop itself).

Under asyncio and SQLAlchemy's greenlets a stack often starts at a resumed coroutine or inside
a greenlet, not at the request: `--parts` names the first known part found on each stack and
puts SQLAlchemy code run in a greenlet (whichever task it serves) in a part of its own.

    python -m bench.stacks results/get-2000.txt --top 40 [--match app/]
    python -m bench.stacks results/get-2000.txt --parts
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# "function (path/to/file.py:123)": the line number is dropped, so a function counts once.
FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    match = FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/app/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1] if marker != "/app/" else "app/" + path.split(marker, 1)[1]
            break
    return f"{match['function']} ({path})"


def summarise(path: Path) -> tuple[int, Counter[str], Counter[str]]:
    total = 0
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(frame) for frame in stack.split(";")]
        total += count
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count
    return total, inclusive, own


# Checked in this order: the first found on a stack names its part.
PARTS = (
    ("post_response", "handler: post_response"),
    ("get_discussion", "handler: get_discussion"),
    ("NotifyWorker", "notification worker"),
    ("AnalysisWorker", "analysis worker"),
    ("Hub.", "hub (fan-out)"),
    ("OutboxRelay", "outbox relay"),
    ("PresenceTracker", "presence"),
    ("install.<locals>.finished", "access log"),
    ("add_security_headers", "http_security (after)"),
    ("refuse_forgeries_and_non_json", "http_security (before)"),
    ("refuse_unstorable_url", "refuse_unstorable_url"),
)


def part_of(frames: list[str]) -> str:
    for prefix, name in PARTS:
        if any(frame.startswith(prefix) for frame in frames):
            return name
    if any("aiosqlite" in frame for frame in frames):
        return "SQLite thread (aiosqlite)"
    if any("sqlalchemy" in frame or frame.startswith("greenlet") for frame in frames):
        return "SQLAlchemy in a greenlet"
    if any("hypercorn" in frame or "h11" in frame for frame in frames):
        return "Hypercorn / h11"
    if any("quart" in frame or "werkzeug" in frame for frame in frames):
        return "Quart (outside the handler)"
    if frames and frames[-1].startswith("Runner.run"):
        return "event loop itself (uvloop, system calls)"
    return "other"


def parts(path: Path) -> tuple[int, Counter[str]]:
    total = 0
    counts: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        total += int(count_text)
        counts[part_of([frame_name(frame) for frame in stack.split(";")])] += int(count_text)
    return total, counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--match", default="", help="only functions whose file contains this")
    parser.add_argument("--parts", action="store_true", help="samples by part of the server")
    args = parser.parse_args()
    for path in args.files:
        if args.parts:
            total, counts = parts(path)
            print(f"## {path} ({total} samples)")
            for name, count in counts.most_common():
                print(f"{100 * count / max(total, 1):5.1f}%  {name}")
            continue
        total, inclusive, own = summarise(path)
        print(f"## {path} ({total} samples)")
        for title, counter in (("inclusive", inclusive), ("self", own)):
            print(f"### {title}")
            rows = [(name, count) for name, count in counter.most_common() if args.match in name][: args.top]
            for name, count in rows:
                print(f"{100 * count / max(total, 1):5.1f}%  {name}")


if __name__ == "__main__":
    main()
