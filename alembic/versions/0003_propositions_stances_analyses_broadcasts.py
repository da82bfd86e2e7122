"""propositions, stances, analyses, broadcasts

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 08:03:52.138179
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "broadcasts",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("message", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column("level", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("expires_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("broadcasts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_broadcasts_expires_at"), ["expires_at"], unique=False)

    op.create_table(
        "analyses",
        sa.Column("discussion_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("computed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["discussion_id"],
            ["discussions.id"],
        ),
        sa.PrimaryKeyConstraint("discussion_id"),
    )
    op.create_table(
        "propositions",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("discussion_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("text", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
        ),
        sa.ForeignKeyConstraint(
            ["discussion_id"],
            ["discussions.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("propositions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_propositions_discussion_id"), ["discussion_id"], unique=False)

    op.create_table(
        "stances",
        sa.Column("proposition_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("user_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("discussion_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("stance", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("response_id", sa.Integer(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["proposition_id"],
            ["propositions.id"],
        ),
        sa.PrimaryKeyConstraint("proposition_id", "user_id"),
    )
    with op.batch_alter_table("stances", schema=None) as batch_op:
        batch_op.create_index("ix_stances_discussion", ["discussion_id", "proposition_id"], unique=False)

    with op.batch_alter_table("discussions", schema=None) as batch_op:
        batch_op.create_index("ix_discussions_activity", ["last_activity_at", "id"], unique=False)

    with op.batch_alter_table("responses", schema=None) as batch_op:
        batch_op.create_index("ix_responses_author_discussion", ["author_id", "discussion_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("responses", schema=None) as batch_op:
        batch_op.drop_index("ix_responses_author_discussion")

    with op.batch_alter_table("discussions", schema=None) as batch_op:
        batch_op.drop_index("ix_discussions_activity")

    with op.batch_alter_table("stances", schema=None) as batch_op:
        batch_op.drop_index("ix_stances_discussion")

    op.drop_table("stances")
    with op.batch_alter_table("propositions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_propositions_discussion_id"))

    op.drop_table("propositions")
    op.drop_table("analyses")
    with op.batch_alter_table("broadcasts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_broadcasts_expires_at"))

    op.drop_table("broadcasts")
