"""Live sources: the followed accounts with their sync cursors and locks, deleted posts, and post ids
long enough for Bluesky and Mastodon URIs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 09:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sources",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("network", sa.String(length=32), nullable=False),
        sa.Column("account", sa.String(length=300), nullable=False),
        sa.Column("account_id", sa.String(length=300), nullable=False),
        sa.Column("base_url", sa.Text()),
        sa.Column("cursor", sa.String(length=300)),
        sa.Column("walk_top", sa.String(length=300)),
        sa.Column("walk_resume", sa.Text()),
        sa.Column("walk_top_at", sa.DateTime()),
        sa.Column("cursor_at", sa.DateTime()),
        sa.Column("added_at", sa.DateTime(), nullable=False),
        sa.Column("last_sync_at", sa.DateTime()),
        sa.Column("last_error", sa.Text()),
        sa.Column("syncs", sa.Integer(), nullable=False),
        sa.Column("posts", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("locked_by", sa.String(length=200)),
        sa.Column("locked_at", sa.DateTime()),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ux_sources_account", "sources", ["network", "account_id"], unique=True)
    op.add_column("posts", sa.Column("deleted_at", sa.DateTime()))
    # SQLite never enforces a VARCHAR length, and altering a column there rebuilds the table.
    if op.get_bind().dialect.name != "sqlite":
        for table in ("posts", "post_imports", "post_history"):
            op.alter_column(table, "post_id", type_=sa.String(length=300), existing_nullable=False)
