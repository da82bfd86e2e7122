"""The serving process's collector policy (app/infra/collector.py), on CPython's real collector."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from app.infra.collector import Collector
from app.settings import Settings


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref[Node]:
    """A reference cycle only the cyclic collector can free; a weak reference to watch it."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.collect()
    yield
    gc.unfreeze()


def test_a_step_freezes_what_lived_through_the_interval() -> None:
    collector = Collector(freeze_every_s=1.0, full_every_s=600.0)
    watched = cycle()
    frozen_before = gc.get_freeze_count()
    collector.step(now=collector._last_full + 1.0)
    assert gc.get_freeze_count() > frozen_before
    # Frozen: a collection no longer walks it, so the cycle outlives it.
    gc.collect()
    assert watched() is not None


def test_the_full_pass_frees_garbage_that_was_frozen() -> None:
    collector = Collector(freeze_every_s=1.0, full_every_s=600.0)
    watched = cycle()
    collector.step(now=collector._last_full + 1.0)
    gc.collect()
    assert watched() is not None
    assert collector.full_pass() > 0
    assert watched() is None
    assert gc.get_freeze_count() > 0  # what survived is frozen again


def test_the_full_pass_runs_when_due() -> None:
    collector = Collector(freeze_every_s=1.0, full_every_s=10.0)
    watched = cycle()
    collector.step(now=collector._last_full + 1.0)
    gc.collect()
    assert watched() is not None
    collector.step(now=collector._last_full + 10.0)
    assert watched() is None


def test_settings() -> None:
    assert Settings.from_env({"PARLEY_DEV_LOGIN": "1"}).gc_freeze_s == 1.0
    settings = Settings.from_env({"PARLEY_DEV_LOGIN": "1", "PARLEY_GC_FREEZE_S": "0", "PARLEY_GC_FULL_S": "60"})
    assert (settings.gc_freeze_s, settings.gc_full_s) == (0.0, 60.0)
