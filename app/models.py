"""Stored data (SQLModel tables). Migrations in alembic/versions must follow every change here."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class User(SQLModel, table=True):
    """Upserted from token claims: Parley does not own identities, the token issuer does."""

    __tablename__ = "users"
    id: str = Field(primary_key=True, max_length=200)
    name: str = Field(index=True, max_length=200)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Discussion(SQLModel, table=True):
    __tablename__ = "discussions"
    id: str = Field(primary_key=True, max_length=64)
    title: str = Field(max_length=300)
    visibility: str = Field(default="public", max_length=16)
    created_by: str = Field(foreign_key="users.id", max_length=200)
    created_at: datetime = Field(default_factory=utcnow)
    last_activity_at: datetime = Field(default_factory=utcnow)


class DiscussionMember(SQLModel, table=True):
    __tablename__ = "discussion_members"
    discussion_id: str = Field(foreign_key="discussions.id", primary_key=True, max_length=64)
    user_id: str = Field(primary_key=True, max_length=200)


class Response(SQLModel, table=True):
    __tablename__ = "responses"
    __table_args__ = (UniqueConstraint("author_id", "client_id", name="uq_responses_author_client_id"),)
    # Integer and increasing, so "oldest first" and `after=` are one index range.
    id: int | None = Field(default=None, primary_key=True)
    discussion_id: str = Field(foreign_key="discussions.id", index=True, max_length=64)
    author_id: str = Field(foreign_key="users.id", max_length=200)
    body: str
    parent_id: int | None = Field(default=None, foreign_key="responses.id")
    stances: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    client_id: str | None = Field(default=None, max_length=100)
    created_at: datetime = Field(default_factory=utcnow)
    edited_at: datetime | None = None
    deleted: bool = False


class Follow(SQLModel, table=True):
    __tablename__ = "follows"
    user_id: str = Field(primary_key=True, max_length=200)
    discussion_id: str = Field(foreign_key="discussions.id", primary_key=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    # Responses after this one are unread; reading the thread moves it forward.
    last_read_response_id: int = 0
