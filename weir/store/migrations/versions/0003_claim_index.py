"""an index for claiming runs in id order by status

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("weir_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_weir_runs_status_id"), ["status", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("weir_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_weir_runs_status_id"))
