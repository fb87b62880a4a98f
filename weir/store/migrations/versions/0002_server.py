"""run deduplication keys, stored revisions, schedule fire times, shared settings

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from weir.store.tables import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("weir_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dedup_key", sa.String(length=300), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_weir_runs_dedup_key"), ["dedup_key"])
    op.create_table(
        "weir_revisions",
        sa.Column("sha", sa.String(length=64), nullable=False),
        sa.Column("files", sa.LargeBinary(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("author", sa.String(length=200), nullable=True),
        sa.Column("committed_at", UtcDateTime(), nullable=True),
        sa.Column("stored_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sha", name=op.f("pk_weir_revisions")),
    )
    op.create_table(
        "weir_schedules",
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("last_fire_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_weir_schedules")),
    )
    op.create_table(
        "weir_meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_weir_meta")),
    )


def downgrade() -> None:
    op.drop_table("weir_meta")
    op.drop_table("weir_schedules")
    op.drop_table("weir_revisions")
    with op.batch_alter_table("weir_runs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_weir_runs_dedup_key"), type_="unique")
        batch_op.drop_column("dedup_key")
