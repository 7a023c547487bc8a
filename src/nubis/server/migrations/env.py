"""Alembic environment: runs on the connection nubis passes in (see db.Database.migrate)."""

from alembic import context

from nubis.server.orm import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("nubis runs its migrations itself at start: use `nubis up`")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
