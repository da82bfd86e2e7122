"""Propositions and the common-ground analysis (API.md, "Common ground analysis").

- `POST /api/discussions/{id}/propositions {"text"}`: anyone who can read the discussion;
  201 `{"id","text","discussion_id","created_by","created_at"}`; fires `proposition_added`
  (the analysis worker then publishes a new version that lists it).
- `GET /api/discussions/{id}/propositions`: `{"propositions": [...]}`, oldest first.
- `GET /api/discussions/{id}/analysis`: the stored document (app/analysis/rules.py), version 0
  with zero counts before the first computation.
- `POST /api/discussions/{id}/analysis`: role `analyzer`; a document of the same shape, stored
  as the next version and published as `analysis_updated`.
Stances ride on `POST .../responses` (app/api/discussions.py). A private discussion the caller
may not read is 404 here as everywhere (an analyzer service needs membership too).
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from pydantic import ConfigDict, Field, StringConstraints
from quart import Blueprint
from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.analysis import store as analysis_store
from app.api.discussions import StrictBody
from app.core.services import services
from app.domain.access import readable_discussion
from app.domain.models import Proposition
from app.domain.roles import ANALYZER, require_role
from app.errors import Conflict, Forbidden, InvalidField, NotFound, RateLimited
from app.log import topics
from app.log.events import rfc3339
from app.web.contract import documented
from app.web.requests import caller, ensure_readable, json_body
from app.web.wire import AnalysisDocument, PropositionOut, Shape

blueprint = Blueprint("analysis", __name__)

# A discussion's propositions, and so an analysis document, stay bounded.
MAX_PROPOSITIONS = 100
MAX_PROPOSITION_CHARS = 500

PropositionId = Annotated[str, StringConstraints(min_length=1, max_length=32)]
Count = Annotated[int, Field(ge=0, le=10**9)]


class NewProposition(StrictBody):
    # No NUL: PostgreSQL text cannot hold it (a 500 otherwise).
    text: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_PROPOSITION_CHARS, pattern=r"^[^\x00]*$"),
    ]


class PropositionFigures(StrictBody):
    model_config = ConfigDict(strict=True, extra="forbid")
    id: PropositionId
    # The stored text always wins (an analyzer cannot rename a proposition); accepted so a
    # document read from GET can be sent back as it is.
    text: str | None = Field(default=None, max_length=MAX_PROPOSITION_CHARS)
    agree: Count
    disagree: Count
    pass_: Count = Field(alias="pass")
    agreement: Annotated[float, Field(ge=0.0, le=1.0)] | None


class ExternalAnalysis(StrictBody):
    """The document of app/analysis/rules.py. `version`, `computed_at`, `source` and
    `new_common_ground` are the server's to set: accepted (so a GET body can be echoed) and
    ignored. Unknown fields are refused (a misspelt `common_groud` must not vanish quietly)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    version: int | None = None
    computed_at: str | None = Field(default=None, max_length=40)
    source: str | None = Field(default=None, max_length=16)
    new_common_ground: list[PropositionId] | None = Field(default=None, max_length=MAX_PROPOSITIONS)
    participants: Count
    propositions: list[PropositionFigures] = Field(max_length=MAX_PROPOSITIONS)
    common_ground: list[PropositionId] = Field(max_length=MAX_PROPOSITIONS)
    divisive: list[PropositionId] = Field(max_length=MAX_PROPOSITIONS)


class PropositionList(Shape):
    propositions: list[PropositionOut] = Field(description="oldest first")


def proposition_json(proposition: Proposition) -> dict[str, Any]:
    return {
        "id": proposition.id,
        "text": proposition.text,
        "discussion_id": proposition.discussion_id,
        "created_by": proposition.created_by,
        "created_at": rfc3339(proposition.created_at),
    }


@blueprint.post("/api/discussions/<discussion_id>/propositions")
@documented(
    "Add a proposition to a discussion",
    description="Anyone who can read the discussion. At most 100 per discussion.",
    body=NewProposition,
    response=PropositionOut,
    status=201,
    errors=[NotFound, RateLimited, (Conflict, "too_many_propositions")],
    fires=["proposition_added"],
)
async def create_proposition(discussion_id: str) -> tuple[dict[str, Any], int]:
    identity = await caller()
    new = await json_body(NewProposition)
    parley = services()
    await parley.rate_limit.hit(identity.user_id)
    async with parley.db.session() as session:
        await readable_discussion(session, identity, discussion_id)
        existing = await session.exec(
            select(func.count(col(Proposition.id))).where(Proposition.discussion_id == discussion_id)
        )
        if existing.one() >= MAX_PROPOSITIONS:
            raise Conflict(f"a discussion holds at most {MAX_PROPOSITIONS} propositions", code="too_many_propositions")
        proposition = Proposition(
            id=secrets.token_urlsafe(9), discussion_id=discussion_id, text=new.text, created_by=identity.user_id
        )
        session.add(proposition)
        await session.commit()
    body = proposition_json(proposition)
    await parley.publish(
        topics.discussion(discussion_id),
        "proposition_added",
        discussion_id=discussion_id,
        user=identity.public,
        payload={"proposition": body},
    )
    return body, 201


@blueprint.get("/api/discussions/<discussion_id>/propositions")
@documented("A discussion's propositions, oldest first", response=PropositionList, errors=[NotFound])
async def list_propositions(discussion_id: str) -> dict[str, Any]:
    identity = await caller()
    async with services().db.session() as session:
        await readable_discussion(session, identity, discussion_id)
        rows = await session.exec(
            select(Proposition)
            .where(Proposition.discussion_id == discussion_id)
            .order_by(col(Proposition.created_at), col(Proposition.id))
        )
        return {"propositions": [proposition_json(p) for p in rows.all()]}


@blueprint.get("/api/discussions/<discussion_id>/analysis")
@documented(
    "A discussion's common-ground analysis",
    description="The stored document; version 0 with zero counts before the first computation.",
    response=AnalysisDocument,
    errors=[NotFound],
)
async def get_analysis(discussion_id: str) -> dict[str, Any]:
    identity = await caller()
    async with services().db.session() as session:
        await readable_discussion(session, identity, discussion_id)
        return await analysis_store.current(session, discussion_id)


@blueprint.post("/api/discussions/<discussion_id>/analysis")
@documented(
    "Publish an analysis from an external analyzer",
    description=(
        "Role `analyzer` (and read access). Stored as the next version (`source: external`) and "
        "published as `analysis_updated`; `version`, `computed_at`, `source`, `new_common_ground` "
        "and proposition texts are the server's."
    ),
    body=ExternalAnalysis,
    response=AnalysisDocument,
    status=201,
    errors=[NotFound, (Forbidden, "role_required"), (InvalidField, "unknown_proposition")],
    roles=["analyzer"],
    fires=["analysis_updated"],
)
async def post_analysis(discussion_id: str) -> tuple[dict[str, Any], int]:
    identity = await caller()
    require_role(identity, ANALYZER)
    incoming = await json_body(ExternalAnalysis)
    parley = services()
    await ensure_readable(identity, discussion_id)
    _check_consistent(incoming)

    async def build(session: AsyncSession, previous: dict[str, Any] | None) -> dict[str, Any]:
        texts = {p.id: p.text for p in await analysis_store.propositions_of(session, discussion_id)}
        unknown = [p.id for p in incoming.propositions if p.id not in texts]
        if unknown:
            raise InvalidField(
                f"propositions: {unknown[0]!r} is not a proposition of this discussion", code="unknown_proposition"
            )
        before = set((previous or {}).get("common_ground", []))
        return {
            "version": 0,
            "computed_at": None,
            "source": "external",
            "participants": incoming.participants,
            "propositions": [
                {
                    "id": p.id,
                    "text": texts[p.id],
                    "agree": p.agree,
                    "disagree": p.disagree,
                    "pass": p.pass_,
                    "agreement": p.agreement,
                }
                for p in incoming.propositions
            ],
            "common_ground": list(incoming.common_ground),
            "divisive": list(incoming.divisive),
            "new_common_ground": [pid for pid in incoming.common_ground if pid not in before],
        }

    document = await analysis_store.save(parley.db, discussion_id, "external", build)
    await parley.publish(
        topics.discussion(discussion_id),
        "analysis_updated",
        discussion_id=discussion_id,
        user=identity.public,
        payload=document,
    )
    return document, 201


def _check_consistent(incoming: ExternalAnalysis) -> None:
    ids = [p.id for p in incoming.propositions]
    if len(set(ids)) != len(ids):
        raise InvalidField("propositions: an id appears twice")
    listed = set(ids)
    for name, group in (("common_ground", incoming.common_ground), ("divisive", incoming.divisive)):
        if len(set(group)) != len(group):
            raise InvalidField(f"{name}: an id appears twice")
        stray = [pid for pid in group if pid not in listed]
        if stray:
            raise InvalidField(f"{name}: {stray[0]!r} is not in propositions")
    both = set(incoming.common_ground) & set(incoming.divisive)
    if both:
        raise InvalidField(f"{sorted(both)[0]!r} cannot be both common ground and divisive")
