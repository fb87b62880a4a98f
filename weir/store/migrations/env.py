"""Alembic environment: migrations run on the connection weir hands over (see weir.store.database)."""

from __future__ import annotations

from alembic import context

from weir.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reached by calling the alembic CLI directly
    raise RuntimeError("run migrations with `weir db upgrade --db URL`, not with the alembic command")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
