"""runs of a workflow indexed in id order, as they are listed

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21

``GET /api/runs?workflow=``, a workflow's last run (the workflows list of the API and the UI)
and its recent runs are read newest id first. The (workflow, created_at) index found the
workflow's runs but not in that order, so every such read sorted all of the workflow's runs.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("weir_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_weir_runs_workflow_id"), ["workflow", "id"], unique=False)
        batch_op.drop_index(batch_op.f("ix_weir_runs_workflow_created_at"))


def downgrade() -> None:
    with op.batch_alter_table("weir_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_weir_runs_workflow_created_at"), ["workflow", "created_at"], unique=False)
        batch_op.drop_index(batch_op.f("ix_weir_runs_workflow_id"))
