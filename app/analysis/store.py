"""Stored stances and analyses: the database side of common ground (app/analysis/rules.py).

- `stance_rows` and `stance_upsert` store a participant's stances, in the transaction of the
  response that carries them (app/api/posting.py: they commit together, or neither does).
- `tally` counts a discussion's current stances from scratch (one GROUP BY).
- `current` is the stored document, or version 0 when nothing was computed yet.
- `save` stores the next version with a compare-and-set on the previous one: whoever writes
  (the analysis worker, an external analyzer) gets the next number, and a concurrent writer is
  retried on top of the new version instead of overwriting it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy import distinct, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from app.analysis.rules import Counts, PropositionText, empty_document
from app.domain.models import Analysis, Proposition, Stance, utcnow
from app.infra.db import Database
from app.log.events import rfc3339

SAVE_ATTEMPTS = 5

# Builds the next document from the previous one (None before the first), inside the session
# that will store it; `save` then sets its `version` and `computed_at`.
Builder = Callable[[AsyncSession, dict[str, Any] | None], Awaitable[dict[str, Any]]]


class AnalysisConflict(Exception):
    """Other writers kept moving the version for `SAVE_ATTEMPTS` tries."""


async def propositions_of(session: AsyncSession, discussion_id: str) -> list[PropositionText]:
    rows = await session.exec(
        select(Proposition.id, Proposition.text)
        .where(Proposition.discussion_id == discussion_id)
        .order_by(col(Proposition.created_at), col(Proposition.id))
    )
    return [PropositionText(pid, text) for pid, text in rows.all()]


STANCE_COLUMNS = ("proposition_id", "user_id", "discussion_id", "stance", "response_id", "updated_at")


def stance_rows(
    *, discussion_id: str, user_id: str, response_id: int, stances: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The `stances` table's rows for one response's stances (upserted by `stance_upsert`)."""
    now = utcnow()
    return [
        {
            "proposition_id": proposition_id,
            "user_id": user_id,
            "discussion_id": discussion_id,
            "stance": stance,
            "response_id": response_id,
            "updated_at": now,
        }
        for proposition_id, stance in sorted(stances.items())
    ]


def stance_upsert(dialect: str) -> Any:
    """Insert (proposition, user) -> stance, or move an existing row to it: only to a later
    response, so the latest stance wins even if two posts of one user commit out of order."""
    table = Stance.__table__  # type: ignore[attr-defined]
    insert = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    return insert.on_conflict_do_update(
        index_elements=["proposition_id", "user_id"],
        set_={
            "stance": insert.excluded.stance,
            "response_id": insert.excluded.response_id,
            "updated_at": insert.excluded.updated_at,
        },
        where=table.c.response_id < insert.excluded.response_id,
    )


async def tally(session: AsyncSession, discussion_id: str) -> tuple[int, dict[str, Counts]]:
    """(participants, counts per proposition id), from scratch. Participants: people with a
    stance on at least one of the discussion's propositions (a pass counts: they took part)."""
    rows = await session.exec(
        select(Stance.proposition_id, Stance.stance, func.count())
        .where(Stance.discussion_id == discussion_id)
        .group_by(col(Stance.proposition_id), col(Stance.stance))
    )
    raw: dict[str, dict[str, int]] = {}
    for proposition_id, stance, count in rows.all():
        raw.setdefault(proposition_id, {})[stance] = int(count)
    counts = {
        pid: Counts(agree=c.get("agree", 0), disagree=c.get("disagree", 0), passed=c.get("pass", 0))
        for pid, c in raw.items()
    }
    participants = await session.exec(
        select(func.count(distinct(col(Stance.user_id)))).where(Stance.discussion_id == discussion_id)
    )
    return int(participants.one()), counts


async def current(session: AsyncSession, discussion_id: str) -> dict[str, Any]:
    row = await session.get(Analysis, discussion_id)
    if row is not None:
        return dict(row.document)
    return empty_document(await propositions_of(session, discussion_id))


async def current_version(db: Database, discussion_id: str) -> int:
    async with db.session() as session:
        row = await session.get(Analysis, discussion_id)
        return 0 if row is None else row.version


async def save(db: Database, discussion_id: str, source: str, build: Builder) -> dict[str, Any]:
    """Store the document `build` makes as the next version; returns it as stored."""
    for _ in range(SAVE_ATTEMPTS):
        async with db.session() as session:
            row = await session.get(Analysis, discussion_id)
            previous = None if row is None else dict(row.document)
            version = 1 if row is None else row.version + 1
            now = utcnow()
            document = await build(session, previous)
            document.update(version=version, computed_at=rfc3339(now), source=source)
            if row is None:
                session.add(Analysis(discussion_id=discussion_id, version=version, source=source, document=document))
                try:
                    await session.commit()
                except IntegrityError:  # another writer stored version 1 first
                    await session.rollback()
                    continue
                return document
            moved = await session.exec(
                update(Analysis)
                .where(col(Analysis.discussion_id) == discussion_id, col(Analysis.version) == row.version)
                .values(version=version, source=source, document=document, computed_at=now)
            )
            await session.commit()
            if moved.rowcount == 1:
                return document
    raise AnalysisConflict(f"analysis of {discussion_id} kept changing; not stored")
