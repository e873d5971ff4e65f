"""Alembic's environment for the archive: always run through executor/archive/migrate.py,
which hands it an open connection (sync, from the async engine's run_sync)."""

from __future__ import annotations

from alembic import context

from executor.archive.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("the archive's migrations run through `orderstream archive --init` or "
                       "`--upgrade`, which give them the database connection")
# render_as_batch: SQLite alters a table by copying it, which batch mode does.
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
