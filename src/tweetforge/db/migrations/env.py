"""Alembic's environment: migrations run on the connection tweetforge.db.migrate hands over (already in a
transaction that holds the store's migration lock), against the schema in tweetforge.db.schema."""

from __future__ import annotations

from alembic import context

from tweetforge.db.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
