"""Common ground (FR-012..016): from stance counts to the analysis document. Pure functions.

The document is what `GET /api/discussions/{id}/analysis` returns and what `analysis_updated`
carries, byte for byte the same JSON:

    {"version", "computed_at", "source", "participants",
     "propositions": [{"id", "text", "agree", "disagree", "pass", "agreement"}],
     "common_ground": [ids], "divisive": [ids], "new_common_ground": [ids]}

- `agreement` = agree / (agree + disagree), rounded to 4 places; null when both are 0
  (passes say "no opinion" and count toward neither).
- A proposition is judged only when at least `min_participants` people agreed or disagreed
  with it. Then it is *common ground* when agreement >= `common_ground_min`, and *divisive*
  when agreement lies within [`divisive_low`, `divisive_high`] (the room is split).
  `common_ground` is ordered by agreement, highest first; `divisive` by closeness to an even
  split. Ties: the proposition's order in the discussion.
- `new_common_ground`: ids in `common_ground` that were not in the previous version's (what
  followers are notified of, through `app.notify.rules`).

The document is always computed from the full counts (no incremental state), so a
recomputation equals a computation from scratch by construction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.settings import Settings

STANCES = ("agree", "disagree", "pass")
AGREEMENT_DIGITS = 4


@dataclass(frozen=True, slots=True)
class Thresholds:
    min_participants: int = 3
    common_ground_min: float = 0.7
    divisive_low: float = 0.35
    divisive_high: float = 0.65

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        return cls(
            settings.cg_min_participants,
            settings.cg_common_ground_min,
            settings.cg_divisive_low,
            settings.cg_divisive_high,
        )


@dataclass(frozen=True, slots=True)
class PropositionText:
    id: str
    text: str


@dataclass(frozen=True, slots=True)
class Counts:
    agree: int = 0
    disagree: int = 0
    passed: int = 0

    @property
    def voters(self) -> int:
        return self.agree + self.disagree

    @property
    def agreement(self) -> float | None:
        return None if self.voters == 0 else self.agree / self.voters


def proposition_entry(proposition: PropositionText, counts: Counts) -> dict[str, Any]:
    agreement = counts.agreement
    return {
        "id": proposition.id,
        "text": proposition.text,
        "agree": counts.agree,
        "disagree": counts.disagree,
        "pass": counts.passed,
        "agreement": None if agreement is None else round(agreement, AGREEMENT_DIGITS),
    }


def classify(
    propositions: Sequence[PropositionText], counts: Mapping[str, Counts], thresholds: Thresholds
) -> tuple[list[str], list[str]]:
    """(common ground, divisive) ids, ordered as the module docstring says."""
    common: list[tuple[float, int, str]] = []
    divisive: list[tuple[float, int, str]] = []
    for order, proposition in enumerate(propositions):
        tally = counts.get(proposition.id, Counts())
        agreement = tally.agreement
        if agreement is None or tally.voters < thresholds.min_participants:
            continue
        if agreement >= thresholds.common_ground_min:
            common.append((-agreement, order, proposition.id))
        elif thresholds.divisive_low <= agreement <= thresholds.divisive_high:
            divisive.append((abs(agreement - 0.5), order, proposition.id))
    return [entry[2] for entry in sorted(common)], [entry[2] for entry in sorted(divisive)]


def document(
    *,
    version: int,
    computed_at: str | None,
    source: str | None,
    participants: int,
    propositions: Sequence[PropositionText],
    counts: Mapping[str, Counts],
    thresholds: Thresholds,
    previous_common_ground: Iterable[str] = (),
) -> dict[str, Any]:
    """The analysis document of a discussion from its stance counts."""
    common, divisive = classify(propositions, counts, thresholds)
    before = set(previous_common_ground)
    return {
        "version": version,
        "computed_at": computed_at,
        "source": source,
        "participants": participants,
        "propositions": [proposition_entry(p, counts.get(p.id, Counts())) for p in propositions],
        "common_ground": common,
        "divisive": divisive,
        "new_common_ground": [pid for pid in common if pid not in before],
    }


def empty_document(propositions: Sequence[PropositionText]) -> dict[str, Any]:
    """Version 0: before anything was computed, the propositions with zero counts."""
    return document(
        version=0,
        computed_at=None,
        source=None,
        participants=0,
        propositions=propositions,
        counts={},
        thresholds=Thresholds(),
    )
