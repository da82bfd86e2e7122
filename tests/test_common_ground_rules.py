"""The pure parts of common ground: the document (app/analysis/rules.py) and the debounce
schedule (app/analysis/debounce.py), with the time passed in."""

from __future__ import annotations

import pytest

from app.analysis.debounce import DebounceSchedule
from app.analysis.rules import Counts, PropositionText, Thresholds, document, empty_document
from app.log.cursor import Position
from app.settings import ConfigError, Settings

P = [
    PropositionText("a", "Shade"),
    PropositionText("b", "Cost"),
    PropositionText("c", "Noise"),
    PropositionText("d", "X"),
]


def test_counts_agreement_and_classification() -> None:
    counts = {
        "a": Counts(agree=9, disagree=1, passed=5),  # 0.9: common ground
        "b": Counts(agree=5, disagree=5),  # 0.5: divisive
        "c": Counts(agree=2, disagree=0, passed=9),  # too few voters: judged neither
        "d": Counts(agree=7, disagree=3),  # 0.7: common ground, at the threshold
    }
    doc = document(
        version=2,
        computed_at="t",
        source="computed",
        participants=20,
        propositions=P,
        counts=counts,
        thresholds=Thresholds(min_participants=3),
        previous_common_ground=["d"],
    )
    assert doc["propositions"][0] == {
        "id": "a",
        "text": "Shade",
        "agree": 9,
        "disagree": 1,
        "pass": 5,
        "agreement": 0.9,
    }
    assert doc["common_ground"] == ["a", "d"]  # highest agreement first
    assert doc["divisive"] == ["b"]
    assert doc["new_common_ground"] == ["a"]  # d was common ground already
    assert [p["agreement"] for p in doc["propositions"]] == [0.9, 0.5, 1.0, 0.7]


def test_only_passes_give_no_agreement_and_version_0_is_empty() -> None:
    doc = document(
        version=1,
        computed_at="t",
        source="computed",
        participants=3,
        propositions=P[:1],
        counts={"a": Counts(passed=3)},
        thresholds=Thresholds(min_participants=1),
    )
    assert doc["propositions"][0]["agreement"] is None and doc["common_ground"] == []
    empty = empty_document(P[:2])
    assert empty["version"] == 0 and empty["computed_at"] is None and empty["participants"] == 0
    assert [p["agree"] + p["disagree"] + p["pass"] for p in empty["propositions"]] == [0, 0]


def test_thresholds_come_from_settings_and_inconsistent_bands_are_refused() -> None:
    settings = Settings.from_env(
        {"PARLEY_CG_MIN_PARTICIPANTS": "5", "PARLEY_CG_COMMON_GROUND_MIN": "0.8", "PARLEY_CG_DIVISIVE_HIGH": "0.6"}
    )
    assert Thresholds.from_settings(settings) == Thresholds(5, 0.8, 0.35, 0.6)
    with pytest.raises(ConfigError):
        Settings.from_env({"PARLEY_CG_DIVISIVE_HIGH": "0.75"})  # overlaps common ground (0.7)
    with pytest.raises(ConfigError):
        Settings.from_env({"PARLEY_CG_DIVISIVE_LOW": "0.6", "PARLEY_CG_DIVISIVE_HIGH": "0.4"})
    assert Settings.from_env({"PARLEY_DEV_ROLES": " admin, analyzer ,"}).dev_roles == {"admin", "analyzer"}
    assert Settings.from_env({}).dev_roles == frozenset()


def schedule() -> DebounceSchedule:
    return DebounceSchedule(debounce_s=0.2, min_interval_s=1.0, retry_s=0.5, max_attempts=3)


def test_a_burst_gives_one_run_then_one_final_run() -> None:
    s = schedule()
    s.mark("d", Position(1, 0), now=0.0)
    for i in range(50):  # more changes before the run starts join it
        s.mark("d", Position(2, i), now=0.01 * i)
    assert s.take_due(0.1) is None and s.next_due() == pytest.approx(0.2)
    assert s.take_due(0.2) == "d"
    for i in range(50):  # changes while it runs: one more run, not a concurrent one
        s.mark("d", Position(3, i), now=0.3)
        assert s.take_due(0.3 + i) is None
    s.finished("d", now=0.5, ok=True)
    # The final run waits for the minimum interval since the previous start (0.2 + 1.0).
    assert s.next_due() == pytest.approx(1.2)
    assert s.take_due(1.2) == "d"
    s.finished("d", now=1.3, ok=True)
    assert s.next_due() is None and s.take_due(100.0) is None


def test_runs_are_counted_per_burst_length_not_per_change() -> None:
    s = schedule()
    runs, now = 0, 0.0
    for step in range(300):  # one change every 10 ms for 3 s; each run takes 50 ms
        now = step * 0.01
        s.mark("d", Position(step, 0), now)
        if s.take_due(now) == "d":
            runs += 1
            s.finished("d", now + 0.05, ok=True)
    while (due := s.next_due()) is not None:
        assert s.take_due(due) == "d"
        runs += 1
        s.finished("d", due + 0.05, ok=True)
    assert runs <= 3 / 1.0 + 2


def test_floor_tracks_changes_no_finished_run_covered() -> None:
    s = schedule()
    assert s.floor() is None
    s.mark("a", Position(5, 0), 0.0)
    s.mark("b", Position(7, 0), 0.0)
    assert s.floor() == Position(5, 0)
    assert s.take_due(0.2) in {"a", "b"}
    assert s.take_due(0.2) in {"a", "b"}
    s.mark("a", Position(9, 0), 0.3)  # while running
    assert s.floor() == Position(5, 0)
    s.finished("a", 0.4, ok=True)
    assert s.floor() == Position(7, 0)  # a's first change is covered; its second is not
    s.finished("b", 0.4, ok=False)  # failed: still uncovered, retried
    assert s.floor() == Position(7, 0) and s.next_due() == pytest.approx(0.9)
    s.clear()
    assert s.floor() is None and len(s) == 0


def test_a_failing_run_is_retried_a_bounded_number_of_times() -> None:
    s = schedule()
    s.mark("d", Position(1, 0), 0.0)
    now = 0.2
    for _ in range(3):
        assert s.take_due(now) == "d"
        s.finished("d", now, ok=False)
        now += 1.0
    assert s.next_due() is None and s.floor() is None
    s.prune(now + 10)
    assert len(s) == 0
