"""Stored data (SQLModel tables). Migrations in alembic/versions must follow every change here."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint
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
    # GET /api/discussions lists by newest activity.
    __table_args__ = (Index("ix_discussions_activity", "last_activity_at", "id"),)
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
    __table_args__ = (
        UniqueConstraint("author_id", "client_id", name="uq_responses_author_client_id"),
        # "Discussions I responded to" (GET /api/discussions?scope=mine).
        Index("ix_responses_author_discussion", "author_id", "discussion_id"),
    )
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
    # When it was deleted: its words are erased a grace period later (app/domain/retention.py).
    deleted_at: datetime | None = None


class Follow(SQLModel, table=True):
    __tablename__ = "follows"
    user_id: str = Field(primary_key=True, max_length=200)
    discussion_id: str = Field(foreign_key="discussions.id", primary_key=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    # Responses after this one are unread; reading the thread moves it forward.
    last_read_response_id: int = 0


class Notification(SQLModel, table=True):
    """One notification for one user, stored *before* it is delivered (NFR-009).

    `id` is what every tab and device dedupes on (FR-011). The unique constraint on
    (source event, recipient, type) makes the worker's redelivery after a crash idempotent:
    processing the same log event twice finds the row instead of making a second one.
    """

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("source_event", "user_id", "type", name="uq_notifications_source_user_type"),
        Index("ix_notifications_user_created", "user_id", "created_at"),
    )
    id: str = Field(primary_key=True, max_length=32)
    user_id: str = Field(max_length=200)
    type: str = Field(max_length=16)
    priority: str = Field(default="normal", max_length=8)
    # The log cursor of the event that caused it (e.g. the `response_posted`).
    source_event: str = Field(max_length=64)
    discussion_id: str | None = Field(default=None, max_length=64)
    response_id: int | None = None
    actor_id: str | None = Field(default=None, max_length=200)
    actor_name: str | None = Field(default=None, max_length=200)
    excerpt: str = Field(default="", max_length=200)
    created_at: datetime = Field(default_factory=utcnow)
    read_at: datetime | None = None
    # In-app delivery: "pending" until published on the user's topic, then "published".
    delivery_state: str = Field(default="pending", max_length=16)
    # Web Push: "none" (not wanted or user active), "pending", "sent", "failed", "gone".
    push_state: str = Field(default="none", max_length=16)


class NotificationPreferences(SQLModel, table=True):
    """FR-010. A user without a row has the defaults (see `app.domain.notifications.DEFAULT_PREFERENCES`)."""

    __tablename__ = "notification_preferences"
    user_id: str = Field(primary_key=True, max_length=200)
    replies: bool = True
    mentions: bool = True
    followed: bool = False
    common_ground: bool = True
    push: bool = True
    updated_at: datetime = Field(default_factory=utcnow)


class PushSubscription(SQLModel, table=True):
    """A browser's Push API subscription. The endpoint is globally unique: a browser that
    signs in as someone else moves its subscription to them."""

    __tablename__ = "push_subscriptions"
    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(index=True, max_length=200)
    endpoint: str = Field(unique=True, max_length=2048)
    p256dh: str = Field(max_length=200)
    auth: str = Field(max_length=100)
    created_at: datetime = Field(default_factory=utcnow)


class OutboxEntry(SQLModel, table=True):
    """An event to append to the log, written in the same transaction as the change it tells
    of (`app.core.outbox`). Deleted once appended; kept at most the retention window."""

    __tablename__ = "outbox"
    # In commit order (roughly), which is the order the relay appends them in.
    id: int | None = Field(default=None, primary_key=True)
    # What makes the append idempotent (`EventLog.append(dedupe_key=...)`). Random, not the
    # row id: SQLite reuses the ids of deleted rows.
    key: str = Field(max_length=32)
    topic: str = Field(max_length=200)
    event_type: str = Field(max_length=32)
    body: str
    created_at: datetime = Field(default_factory=utcnow)


class Proposition(SQLModel, table=True):
    """A statement participants take a stance on (FR-012)."""

    __tablename__ = "propositions"
    id: str = Field(primary_key=True, max_length=32)
    discussion_id: str = Field(foreign_key="discussions.id", index=True, max_length=64)
    text: str = Field(max_length=500)
    created_by: str = Field(foreign_key="users.id", max_length=200)
    created_at: datetime = Field(default_factory=utcnow)


class Stance(SQLModel, table=True):
    """A participant's current stance on one proposition: one row per (proposition, user).

    Upserted from each response's `stances`; `response_id` is the response that set it, and
    a row only moves to a *later* response, so the latest stance wins even when two posts of
    the same user commit out of order. `discussion_id` is a copy of the proposition's, so the
    analysis counts a discussion with one indexed GROUP BY.
    """

    __tablename__ = "stances"
    __table_args__ = (Index("ix_stances_discussion", "discussion_id", "proposition_id"),)
    proposition_id: str = Field(foreign_key="propositions.id", primary_key=True, max_length=32)
    user_id: str = Field(primary_key=True, max_length=200)
    discussion_id: str = Field(max_length=64)
    stance: str = Field(max_length=8)  # agree | disagree | pass
    response_id: int
    updated_at: datetime = Field(default_factory=utcnow)


class Analysis(SQLModel, table=True):
    """The current common-ground analysis of one discussion (the latest version only).

    `document` is exactly what `GET .../analysis` returns and `analysis_updated` carries.
    Writers move `version` forward with a compare-and-set on the previous version, so a
    computed and an external (`analyzer` role) document never overwrite each other silently.
    """

    __tablename__ = "analyses"
    discussion_id: str = Field(foreign_key="discussions.id", primary_key=True, max_length=64)
    version: int
    source: str = Field(max_length=16)  # computed | external
    document: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    computed_at: datetime = Field(default_factory=utcnow)


class Broadcast(SQLModel, table=True):
    """A platform-wide message from an admin (FR-032), kept until it expires so that a user
    who connects within its lifetime still sees it."""

    __tablename__ = "broadcasts"
    id: str = Field(primary_key=True, max_length=32)
    message: str = Field(max_length=1000)
    level: str = Field(max_length=8)  # info | warning | critical
    created_by: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime = Field(index=True)


class AuditEntry(SQLModel, table=True):
    """A moderation-relevant action (app/domain/audit.py): who did what to which thing, and when."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"),)
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow)
    actor_id: str = Field(index=True, max_length=200)
    action: str = Field(max_length=64)
    target: str = Field(max_length=200)
    details: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
