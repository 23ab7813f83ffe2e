"""Baseline: the schema of tweetforge 0.1.0, the last release that made its tables with create_all.

Revision ID: 0001
Revises: (none)
Create Date: 2026-12-02 21:16:41.815867
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Data homes made before migrations existed got their tables from create_all at every start: they are
    # at this revision already, but for any table an older release did not have yet.
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "datasets" not in existing:
        op.create_table(
            "datasets",
            sa.Column("name", sa.String(length=100), nullable=False),
            sa.Column("path", sa.Text(), nullable=False),
            sa.Column("content_hash", sa.String(length=64), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.Column("rules_version", sa.String(length=16), nullable=False),
            sa.Column("authors", sa.JSON(), nullable=False),
            sa.Column("filters", sa.JSON(), nullable=False),
            sa.Column("counts", sa.JSON(), nullable=False),
            sa.Column("posts", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("name"),
        )
    if "evaluations" not in existing:
        op.create_table(
            "evaluations",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("subject", sa.String(length=300), nullable=False),
            sa.Column("kind", sa.String(length=32), nullable=False),
            sa.Column("dataset", sa.String(length=100), nullable=False),
            sa.Column("dataset_hash", sa.String(length=64), nullable=False),
            sa.Column("settings_hash", sa.String(length=64), nullable=False),
            sa.Column("settings", sa.JSON(), nullable=False),
            sa.Column("metrics", sa.JSON(), nullable=False),
            sa.Column("samples", sa.JSON(), nullable=False),
            sa.Column("copies", sa.JSON(), nullable=False),
            sa.Column("seconds", sa.Float(), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("evaluations", schema=None) as batch_op:
            batch_op.create_index(
                "ix_evaluations_subject",
                ["subject", "dataset_hash", "settings_hash"],
                unique=False,
            )
    if "experiment_decisions" not in existing:
        op.create_table(
            "experiment_decisions",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("experiment", sa.String(length=100), nullable=False),
            sa.Column("at", sa.DateTime(), nullable=False),
            sa.Column("state", sa.String(length=32), nullable=False),
            sa.Column("winner", sa.String(length=64), nullable=True),
            sa.Column("promoted", sa.Boolean(), nullable=False),
            sa.Column("statistics", sa.JSON(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
    if "experiments" not in existing:
        op.create_table(
            "experiments",
            sa.Column("name", sa.String(length=100), nullable=False),
            sa.Column("metric", sa.String(length=16), nullable=False),
            sa.Column("min_sample", sa.Integer(), nullable=False),
            sa.Column("alpha", sa.Float(), nullable=False),
            sa.Column("auto_promote", sa.Boolean(), nullable=False),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.Column("stopped_at", sa.DateTime(), nullable=True),
            sa.Column("winner", sa.String(length=64), nullable=True),
            sa.PrimaryKeyConstraint("name"),
        )
    if "generations" not in existing:
        op.create_table(
            "generations",
            sa.Column("id", sa.String(length=36), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.Column("model_name", sa.String(length=100), nullable=False),
            sa.Column("model_version", sa.Integer(), nullable=False),
            sa.Column("experiment", sa.String(length=100), nullable=True),
            sa.Column("variant", sa.String(length=64), nullable=True),
            sa.Column("pair_id", sa.String(length=36), nullable=True),
            sa.Column("user_id", sa.String(length=100), nullable=True),
            sa.Column("prompt", sa.Text(), nullable=False),
            sa.Column("params", sa.JSON(), nullable=False),
            sa.Column("posts", sa.JSON(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("generations", schema=None) as batch_op:
            batch_op.create_index(
                "ix_generations_experiment", ["experiment", "variant"], unique=False
            )
            batch_op.create_index("ix_generations_pair", ["pair_id"], unique=False)
    if "imports" not in existing:
        op.create_table(
            "imports",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("source", sa.Text(), nullable=False),
            sa.Column("format", sa.String(length=32), nullable=False),
            sa.Column("file_hash", sa.String(length=64), nullable=False),
            sa.Column("author_override", sa.String(length=100), nullable=True),
            sa.Column("started_at", sa.DateTime(), nullable=False),
            sa.Column("duration_s", sa.Float(), nullable=True),
            sa.Column("records", sa.Integer(), nullable=False),
            sa.Column("new", sa.Integer(), nullable=False),
            sa.Column("updated", sa.Integer(), nullable=False),
            sa.Column("unchanged", sa.Integer(), nullable=False),
            sa.Column("repeated", sa.Integer(), nullable=False),
            sa.Column("skipped", sa.Integer(), nullable=False),
            sa.Column("refused", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
    if "model_aliases" not in existing:
        op.create_table(
            "model_aliases",
            sa.Column("name", sa.String(length=100), nullable=False),
            sa.Column("alias", sa.String(length=64), nullable=False),
            sa.Column("version", sa.Integer(), nullable=False),
            sa.Column("updated_at", sa.DateTime(), nullable=False),
            sa.PrimaryKeyConstraint("name", "alias"),
        )
    if "model_versions" not in existing:
        op.create_table(
            "model_versions",
            sa.Column("name", sa.String(length=100), nullable=False),
            sa.Column("version", sa.Integer(), nullable=False),
            sa.Column("kind", sa.String(length=32), nullable=False),
            sa.Column("path", sa.Text(), nullable=False),
            sa.Column("base", sa.Text(), nullable=False),
            sa.Column("dataset", sa.String(length=100), nullable=False),
            sa.Column("dataset_hash", sa.String(length=64), nullable=False),
            sa.Column("run_id", sa.String(length=200), nullable=False),
            sa.Column("params", sa.JSON(), nullable=False),
            sa.Column("metrics", sa.JSON(), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.PrimaryKeyConstraint("name", "version"),
        )
    if "optouts" not in existing:
        op.create_table(
            "optouts",
            sa.Column("handle", sa.String(length=100), nullable=False),
            sa.Column("added_at", sa.DateTime(), nullable=False),
            sa.Column("reason", sa.Text(), nullable=True),
            sa.PrimaryKeyConstraint("handle"),
        )
    if "promotions" not in existing:
        op.create_table(
            "promotions",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("name", sa.String(length=100), nullable=False),
            sa.Column("alias", sa.String(length=64), nullable=False),
            sa.Column("from_version", sa.Integer(), nullable=True),
            sa.Column("to_version", sa.Integer(), nullable=False),
            sa.Column("promoted", sa.Boolean(), nullable=False),
            sa.Column("forced", sa.Boolean(), nullable=False),
            sa.Column("who", sa.String(length=100), nullable=False),
            sa.Column("at", sa.DateTime(), nullable=False),
            sa.Column("dataset", sa.String(length=100), nullable=True),
            sa.Column("candidate", sa.JSON(), nullable=False),
            sa.Column("champion", sa.JSON(), nullable=True),
            sa.Column("reason", sa.Text(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
    if "experiment_variants" not in existing:
        op.create_table(
            "experiment_variants",
            sa.Column("experiment", sa.String(length=100), nullable=False),
            sa.Column("variant", sa.String(length=64), nullable=False),
            sa.Column("model_name", sa.String(length=100), nullable=False),
            sa.Column("model_version", sa.Integer(), nullable=False),
            sa.Column("weight", sa.Float(), nullable=False),
            sa.ForeignKeyConstraint(
                ["experiment"], ["experiments.name"], ondelete="CASCADE"
            ),
            sa.PrimaryKeyConstraint("experiment", "variant"),
        )
    if "feedback" not in existing:
        op.create_table(
            "feedback",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("generation_id", sa.String(length=36), nullable=False),
            sa.Column("event", sa.String(length=16), nullable=False),
            sa.Column("winner_id", sa.String(length=36), nullable=True),
            sa.Column("user_id", sa.String(length=100), nullable=True),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.ForeignKeyConstraint(
                ["generation_id"],
                ["generations.id"],
            ),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("feedback", schema=None) as batch_op:
            batch_op.create_index(
                "ix_feedback_generation", ["generation_id"], unique=False
            )
    if "import_skips" not in existing:
        op.create_table(
            "import_skips",
            sa.Column("import_id", sa.Integer(), nullable=False),
            sa.Column("n", sa.Integer(), nullable=False),
            sa.Column("location", sa.Text(), nullable=False),
            sa.Column("reason", sa.Text(), nullable=False),
            sa.ForeignKeyConstraint(["import_id"], ["imports.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("import_id", "n"),
        )
    if "post_history" not in existing:
        op.create_table(
            "post_history",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("network", sa.String(length=32), nullable=False),
            sa.Column("post_id", sa.String(length=64), nullable=False),
            sa.Column("text", sa.Text(), nullable=False),
            sa.Column("replaced_by_import_id", sa.Integer(), nullable=False),
            sa.ForeignKeyConstraint(
                ["replaced_by_import_id"],
                ["imports.id"],
            ),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("post_history", schema=None) as batch_op:
            batch_op.create_index(
                "ix_post_history_post", ["network", "post_id"], unique=False
            )
    if "post_imports" not in existing:
        op.create_table(
            "post_imports",
            sa.Column("network", sa.String(length=32), nullable=False),
            sa.Column("post_id", sa.String(length=64), nullable=False),
            sa.Column("import_id", sa.Integer(), nullable=False),
            sa.ForeignKeyConstraint(
                ["import_id"],
                ["imports.id"],
            ),
            sa.PrimaryKeyConstraint("network", "post_id", "import_id"),
        )
    if "posts" not in existing:
        op.create_table(
            "posts",
            sa.Column("network", sa.String(length=32), nullable=False),
            sa.Column("post_id", sa.String(length=64), nullable=False),
            sa.Column("author", sa.String(length=100), nullable=False),
            sa.Column("text", sa.Text(), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=True),
            sa.Column("is_retweet", sa.Boolean(), nullable=False),
            sa.Column("reply_to", sa.String(length=100), nullable=True),
            sa.Column("likes", sa.BigInteger(), nullable=True),
            sa.Column("reposts", sa.BigInteger(), nullable=True),
            sa.Column("language", sa.String(length=16), nullable=True),
            sa.Column("first_import_id", sa.Integer(), nullable=False),
            sa.Column("updated_import_id", sa.Integer(), nullable=True),
            sa.ForeignKeyConstraint(
                ["first_import_id"],
                ["imports.id"],
            ),
            sa.ForeignKeyConstraint(
                ["updated_import_id"],
                ["imports.id"],
            ),
            sa.PrimaryKeyConstraint("network", "post_id"),
        )
        with op.batch_alter_table("posts", schema=None) as batch_op:
            batch_op.create_index("ix_posts_author", ["author"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("posts", schema=None) as batch_op:
        batch_op.drop_index("ix_posts_author")

    op.drop_table("posts")
    op.drop_table("post_imports")
    with op.batch_alter_table("post_history", schema=None) as batch_op:
        batch_op.drop_index("ix_post_history_post")

    op.drop_table("post_history")
    op.drop_table("import_skips")
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.drop_index("ix_feedback_generation")

    op.drop_table("feedback")
    op.drop_table("experiment_variants")
    op.drop_table("promotions")
    op.drop_table("optouts")
    op.drop_table("model_versions")
    op.drop_table("model_aliases")
    op.drop_table("imports")
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.drop_index("ix_generations_pair")
        batch_op.drop_index("ix_generations_experiment")

    op.drop_table("generations")
    op.drop_table("experiments")
    op.drop_table("experiment_decisions")
    with op.batch_alter_table("evaluations", schema=None) as batch_op:
        batch_op.drop_index("ix_evaluations_subject")

    op.drop_table("evaluations")
    op.drop_table("datasets")
