"""The page's plain-logic modules under Node, one script each in tests/js/ (`<module>.test.mjs`
imports static/<module>.js and prints `ok`): static/presence.js (the typing line, the
participant list, the signal pacing), static/beacons.js (the queue, its pacing, the reports
derived from status events), static/tab_presence.js (one presence status for all the tabs of a
browser)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parent / "js").glob("*.test.mjs"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name.removesuffix(".test.mjs") for s in SCRIPTS])
def test_module_under_node(script: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    result = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_every_script_is_found() -> None:
    assert {s.name for s in SCRIPTS} >= {"presence.test.mjs", "beacons.test.mjs", "tab_presence.test.mjs"}
