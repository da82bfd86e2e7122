"""The shapes Parley answers with, as pydantic models: the contract's output side.

Handlers build plain dicts (cheap, and shared by REST answers and event payloads); these models
describe them in the OpenAPI document (`app.web.contract`, `app.api.openapi`), and with
`PARLEY_CHECK_RESPONSES=1` every answer is validated against them, so a field added to a dict
and not here, or a missing one, fails the tests. `extra="forbid"`: the description is exact.
Shapes used by one route only live next to it; the ones shared by several routes or by event
payloads (`app.web.event_schemas`) live here.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Timestamp = Annotated[
    str,
    Field(
        pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$",
        description="RFC 3339 UTC with milliseconds",
        examples=["2026-11-25T18:00:00.123Z"],
    ),
]
Stance = Literal["agree", "disagree", "pass"]


class Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserRef(Shape):
    """A user as others see them: the token's `sub` and display name."""

    id: str
    name: str


class ErrorDetail(Shape):
    code: str = Field(description="snake_case, stable: what a program branches on")
    message: str = Field(description="for humans; may change")


class ErrorBody(Shape):
    """Every 4xx/5xx answer. 429 and 503 also carry `Retry-After` (seconds)."""

    error: ErrorDetail


class DiscussionOut(Shape):
    id: str
    title: str
    visibility: Literal["public", "private"]
    created_by: str = Field(description="the creator's user id")
    created_at: Timestamp


class ResponseOut(Shape):
    """A response in a discussion. A deleted one keeps its place with an empty `body`."""

    id: str
    discussion_id: str
    author: UserRef
    body: str
    parent_id: str | None
    stances: dict[str, Stance] = Field(description="proposition id -> the author's stance")
    created_at: Timestamp
    edited_at: Timestamp | None
    deleted: bool


class NotificationOut(Shape):
    id: str
    type: Literal["reply", "mention", "activity", "common_ground", "broadcast"]
    priority: Literal["normal", "high"]
    discussion_id: str | None
    response_id: str | None
    actor: UserRef | None
    excerpt: str = Field(description="the start of the response (or analysis) it is about")
    created_at: Timestamp
    read_at: Timestamp | None


class Activity(Shape):
    """A followed discussion's unread count and last activity (FR-008)."""

    discussion_id: str
    title: str
    unread_count: int = Field(ge=0)
    last_activity_at: Timestamp


class PropositionOut(Shape):
    """A statement participants take a stance on (FR-012)."""

    id: str
    text: str
    discussion_id: str
    created_by: str = Field(description="the user id of who added it")
    created_at: Timestamp


class PropositionFigures(Shape):
    id: str
    text: str
    agree: int = Field(ge=0)
    disagree: int = Field(ge=0)
    pass_: int = Field(alias="pass", ge=0)
    agreement: float | None = Field(ge=0.0, le=1.0, description="agree / (agree + disagree); null when both are 0")


class AnalysisDocument(Shape):
    """A discussion's common-ground analysis (docs/COMMON_GROUND.md): what `GET .../analysis`
    answers and `analysis_updated` carries, the same JSON."""

    version: int = Field(ge=0, description="0 before the first computation; each stored version adds 1")
    computed_at: Timestamp | None
    source: Literal["computed", "external"] | None = Field(
        description="Parley's own analyzer, or a service with the `analyzer` role; null at version 0"
    )
    participants: int = Field(ge=0, description="people with at least one stance in the discussion")
    propositions: list[PropositionFigures]
    common_ground: list[str] = Field(description="proposition ids, highest agreement first")
    divisive: list[str] = Field(description="proposition ids, closest to an even split first")
    new_common_ground: list[str] = Field(description="ids in `common_ground` not in the previous version's")


class BroadcastOut(Shape):
    """A platform-wide message from an admin (FR-032)."""

    id: str
    message: str
    level: Literal["info", "warning", "critical"]
    created_at: Timestamp
    expires_at: Timestamp
