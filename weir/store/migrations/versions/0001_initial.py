"""runs, steps, logs and the step cache

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from weir.store.tables import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "weir_cache",
        sa.Column("key", sa.String(length=500), nullable=False),
        sa.Column("output", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_weir_cache")),
    )
    op.create_table(
        "weir_logs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("step_id", sa.String(length=64), nullable=True),
        sa.Column("item_index", sa.Integer(), nullable=True),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_weir_logs")),
    )
    with op.batch_alter_table("weir_logs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_weir_logs_run_id_id"), ["run_id", "id"], unique=False)

    op.create_table(
        "weir_runs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("workflow", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("params", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("trigger", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("parent_run_id", sa.String(length=32), nullable=True),
        sa.Column("parent_step", sa.String(length=80), nullable=True),
        sa.Column("rerun_of", sa.String(length=32), nullable=True),
        sa.Column("concurrency_key", sa.String(length=200), nullable=True),
        sa.Column("concurrency_limit", sa.Integer(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=True),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.Column("wake_at", UtcDateTime(), nullable=True),
        sa.Column("outputs", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_weir_runs")),
    )
    with op.batch_alter_table("weir_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_weir_runs_parent_run_id"), ["parent_run_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_weir_runs_status_wake_at"), ["status", "wake_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_weir_runs_workflow_created_at"), ["workflow", "created_at"], unique=False)

    op.create_table(
        "weir_steps",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("step_id", sa.String(length=64), nullable=False),
        sa.Column("item_index", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=True),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.Column("input", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("output", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_kind", sa.String(length=32), nullable=True),
        sa.Column("wake_at", UtcDateTime(), nullable=True),
        sa.Column("child_run_id", sa.String(length=32), nullable=True),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("note", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_weir_steps")),
        sa.UniqueConstraint(
            "run_id",
            "phase",
            "step_id",
            "item_index",
            "attempt",
            name=op.f("uq_weir_steps_run_id_phase_step_id_item_index_attempt"),
        ),
    )


def downgrade() -> None:
    op.drop_table("weir_steps")
    with op.batch_alter_table("weir_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_weir_runs_workflow_created_at"))
        batch_op.drop_index(batch_op.f("ix_weir_runs_status_wake_at"))
        batch_op.drop_index(batch_op.f("ix_weir_runs_parent_run_id"))

    op.drop_table("weir_runs")
    with op.batch_alter_table("weir_logs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_weir_logs_run_id_id"))

    op.drop_table("weir_logs")
    op.drop_table("weir_cache")
