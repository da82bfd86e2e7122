"""The README's curl walk-through, run as written (in one shell) against a real server: it
must stay true, and it must work in one terminal."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from .support import ROOT, Server

pytestmark = pytest.mark.slow


def walk_through() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Walk-through with curl") :]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match is not None
    return match.group(1)


@pytest.mark.skipif(shutil.which("curl") is None, reason="the walk-through uses curl")
def test_the_walk_through_works_in_one_shell(start_server: Callable[..., Server], tmp_path: Path) -> None:
    server = start_server()
    script = walk_through().replace("localhost:8000", f"127.0.0.1:{server.port}")
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    streamed = (tmp_path / "stream.txt").read_text()
    assert "event: response_posted" in streamed and "what about the cost?" in streamed
    # The resumed stream, printed last, replays exactly the response posted while away.
    resumed = result.stdout[result.stdout.rindex("retry:") :]
    assert resumed.count("event: response_posted") == 1, result.stdout
    assert "Posted while nobody watched" in resumed
