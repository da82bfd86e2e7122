"""The join/leave budget is counted in deliveries: small rooms hear every arrival, a crowd of
readers hears a few a second, and nobody is starved for good."""

from __future__ import annotations

from app.core.room_budget import RoomEventBudget


def allowed(budget: RoomEventBudget, room: str, readers: int, count: int, now: float) -> int:
    return sum(budget.take(room, readers, now=now) for _ in range(count))


def test_a_small_room_hears_a_crowd_arriving() -> None:
    budget = RoomEventBudget(per_s=5_000, burst=15_000)
    assert allowed(budget, "small", readers=50, count=300, now=0.0) == 300  # 300 x 50 = the burst
    assert allowed(budget, "small", readers=50, count=10, now=0.0) == 0
    assert allowed(budget, "small", readers=50, count=200, now=1.0) == 100  # 5,000 deliveries a second


def test_a_big_room_hears_a_few_arrivals_a_second() -> None:
    budget = RoomEventBudget(per_s=5_000, burst=15_000)
    assert allowed(budget, "hot", readers=5_000, count=100, now=0.0) == 3
    assert allowed(budget, "hot", readers=5_000, count=100, now=1.0) == 1
    assert allowed(budget, "other", readers=5_000, count=100, now=1.0) == 3  # per discussion


def test_a_room_bigger_than_the_burst_is_not_silenced_for_good() -> None:
    budget = RoomEventBudget(per_s=5_000, burst=15_000)
    assert allowed(budget, "huge", readers=40_000, count=5, now=0.0) == 1
    assert allowed(budget, "huge", readers=40_000, count=5, now=3.0) == 1
