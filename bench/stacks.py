"""Summarise py-spy's collapsed stacks (`py-spy record --format raw`): the functions with the
most samples, inclusive (anywhere on the stack) and self (on top), as % of all samples.

    python -m bench.stacks results/get-2000.txt --top 40 [--match app/]
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--match", default="", help="only functions whose file contains this")
    args = parser.parse_args()
    for path in args.files:
        total, inclusive, own = summarise(path)
        print(f"## {path} ({total} samples)")
        for title, counter in (("inclusive", inclusive), ("self", own)):
            print(f"### {title}")
            rows = [(name, count) for name, count in counter.most_common() if args.match in name][: args.top]
            for name, count in rows:
                print(f"{100 * count / max(total, 1):5.1f}%  {name}")


if __name__ == "__main__":
    main()
