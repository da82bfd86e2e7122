"""docs/operations: the alert rules and the dashboard use only metrics a running server
exports, and the rules are valid Prometheus rules (`promtool check rules`, when installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable

import httpx
import pytest
import yaml

from .support import ROOT, Server

pytestmark = pytest.mark.slow

OPERATIONS = ROOT / "docs" / "operations"
RULES = OPERATIONS / "alerts.yml"
DASHBOARD = OPERATIONS / "dashboard.json"
# Recorded by Prometheus itself for every scrape target, not by Parley.
PROMETHEUS_OWN = {"up"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_names(text: str) -> set[str]:
    """Every series name /metrics can carry, from its TYPE lines (a labelled metric with no
    value yet has no sample, but is declared)."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        base = name.removesuffix("_total") if kind == "counter" else name
        names.update(base + suffix for suffix in SUFFIXES.get(kind, ("",)))
    return names


def used_names(expressions: list[str]) -> set[str]:
    names = set()
    for expr in expressions:
        names.update(re.findall(r"\b(parley_[a-z_]+)\b", expr))
        names.update(name for name in PROMETHEUS_OWN if re.search(rf"\b{name}\{{", expr))
    return names


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_every_metric_in_the_rules_and_the_dashboard_is_exported(start_server: Callable[..., Server]) -> None:
    server = start_server()
    text = httpx.get(server.url + "/metrics", timeout=10).text
    exported = exported_names(text)
    for source, expressions in (("alerts.yml", rule_expressions()), ("dashboard.json", dashboard_expressions())):
        used = used_names(expressions)
        assert len(used) >= 5, source  # the files were read, and name what they should
        assert used - PROMETHEUS_OWN <= exported, f"{source} uses metrics /metrics does not export: {used - exported}"
    assert exported_names("# TYPE parley_x_total counter\n") == {"parley_x_total"}  # the check itself works
    assert used_names(["rate(parley_not_a_metric_total[5m])"]) - exported == {"parley_not_a_metric_total"}


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (Debian: apt-get install prometheus)"
)
def test_the_alert_rules_are_valid_prometheus_rules() -> None:
    result = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout
