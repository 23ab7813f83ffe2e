"""Every table tweetforge keeps. Portable Core types only: the same schema runs on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

imports = Table(
    "imports",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", Text, nullable=False),
    Column("format", String(32), nullable=False),
    Column("file_hash", String(64), nullable=False),
    Column("author_override", String(100)),
    Column("started_at", DateTime, nullable=False),
    Column("duration_s", Float),
    Column("records", Integer, nullable=False, default=0),
    Column("new", Integer, nullable=False, default=0),
    Column("updated", Integer, nullable=False, default=0),
    Column("unchanged", Integer, nullable=False, default=0),
    Column("repeated", Integer, nullable=False, default=0),
    Column("skipped", Integer, nullable=False, default=0),
    Column("refused", Integer, nullable=False, default=0),
    Column("generated", Integer, nullable=False, default=0),
    # posts refused because tweetforge generated their text
)

import_skips = Table(
    "import_skips",
    metadata,
    Column("import_id", ForeignKey("imports.id", ondelete="CASCADE"), primary_key=True),
    Column("n", Integer, primary_key=True),
    Column("location", Text, nullable=False),
    Column("reason", Text, nullable=False),
)

POST_ID_LENGTH = 300
"""Room for every network's identity: Bluesky's at:// URIs and Mastodon's status URIs pass 64 characters."""

POST_COLUMNS = ("network", "post_id", "author", "text", "created_at", "is_retweet", "reply_to", "likes", "reposts", "language")


def _post_columns() -> list[Column]:
    return [
        Column("network", String(32), primary_key=True),
        Column("post_id", String(POST_ID_LENGTH), primary_key=True),
        Column("author", String(100), nullable=False),
        Column("text", Text, nullable=False),
        Column("created_at", DateTime),
        Column("is_retweet", Boolean, nullable=False),
        Column("reply_to", String(100)),
        Column("likes", BigInteger),
        Column("reposts", BigInteger),
        Column("language", String(16)),
    ]


posts = Table(
    "posts",
    metadata,
    *_post_columns(),
    Column("first_import_id", ForeignKey("imports.id"), nullable=False),
    Column("updated_import_id", ForeignKey("imports.id")),
    Column("deleted_at", DateTime),
    # When a live sync found the post gone; deleted posts stay out of new snapshots.
    Index("ix_posts_author", "author"),
)

post_imports = Table(
    "post_imports",
    metadata,
    Column("network", String(32), primary_key=True),
    Column("post_id", String(POST_ID_LENGTH), primary_key=True),
    Column("import_id", ForeignKey("imports.id"), primary_key=True),
)

post_history = Table(
    "post_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("network", String(32), nullable=False),
    Column("post_id", String(POST_ID_LENGTH), nullable=False),
    Column("text", Text, nullable=False),
    Column("replaced_by_import_id", ForeignKey("imports.id"), nullable=False),
    Index("ix_post_history_post", "network", "post_id"),
)

optouts = Table(
    "optouts",
    metadata,
    Column("handle", String(100), primary_key=True),
    Column("added_at", DateTime, nullable=False),
    Column("reason", Text),
)

datasets = Table(
    "datasets",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("path", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("rules_version", String(16), nullable=False),
    Column("authors", JSON, nullable=False),
    Column("filters", JSON, nullable=False),
    Column("counts", JSON, nullable=False),
    Column("posts", Integer, nullable=False),
)

locks = Table(
    "locks",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("acquired_at", DateTime, nullable=False),
    Column("heartbeat_at", DateTime, nullable=False),
)

pipeline_runs = Table(
    "pipeline_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("cycle_id", Integer),
    # the cycle's own row has none; each step's row names its cycle
    Column("step", String(32), nullable=False),
    Column("model_name", String(100)),
    Column("started_at", DateTime, nullable=False),
    Column("finished_at", DateTime),
    Column("outcome", String(32)),
    # running, ok, failed, skipped, promoted, refused, experiment
    Column("numbers", JSON, nullable=False),
    Column("error", Text),
    Index("ix_pipeline_runs_cycle", "cycle_id"),
)

generated_refusals = Table(
    "generated_refusals",
    metadata,
    Column("network", String(32), primary_key=True),
    Column("post_id", String(POST_ID_LENGTH), primary_key=True),
    Column("author", String(100), nullable=False),
    Column("import_id", ForeignKey("imports.id"), nullable=False),
    # posts refused at import because tweetforge generated their text; the cleaning table counts them
)

sources = Table(
    "sources",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("network", String(32), nullable=False),
    # 'bluesky', 'mastodon' or 'twitter' (the network name posts carry).
    Column("account", String(300), nullable=False),
    # The handle as the network spells it: alice.bsky.social, bob@mastodon.social, carol.
    Column("account_id", String(300), nullable=False),
    # The network's stable id: a DID, a Mastodon account id, an X user id.
    Column("base_url", Text),
    # The API the account was read from when not the network's default.
    Column("cursor", String(300)),
    # Newest post id of the last complete sync: the next sync fetches only newer posts.
    Column("walk_top", String(300)),
    # Newest post id of a sync that stopped part-way; becomes the cursor when its walk completes.
    Column("walk_resume", Text),
    # Where the part-way sync continues (the network's page token).
    Column("walk_top_at", DateTime),
    Column("cursor_at", DateTime),
    # Time of the cursor post (Bluesky pages back until it).
    Column("added_at", DateTime, nullable=False),
    Column("last_sync_at", DateTime),
    Column("last_error", Text),
    Column("syncs", Integer, nullable=False, default=0),
    Column("posts", Integer, nullable=False, default=0),
    # Posts fetched and stored over all syncs.
    Column("requests", Integer, nullable=False, default=0),
    Column("locked_by", String(200)),
    # 'host pid N' of the sync writing now; a lock left by a dead process is taken over.
    Column("locked_at", DateTime),
    Index("ux_sources_account", "network", "account_id", unique=True),
)

staging_metadata = MetaData()
staging_posts = Table("staging_posts", staging_metadata, *_post_columns(), prefixes=["TEMPORARY"])
"""Per-connection table an import fills before one set-based merge into posts."""

model_versions = Table(
    "model_versions",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("path", Text, nullable=False),
    Column("base", Text, nullable=False),
    Column("dataset", String(100), nullable=False),
    Column("dataset_hash", String(64), nullable=False),
    Column("run_id", String(200), nullable=False),
    Column("params", JSON, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("created_at", DateTime, nullable=False),
)

model_aliases = Table(
    "model_aliases",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("alias", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

evaluations = Table(
    "evaluations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject", String(300), nullable=False),  # name:version, 'markov', or 'base:<base model>'
    Column("kind", String(32), nullable=False),
    Column("dataset", String(100), nullable=False),
    Column("dataset_hash", String(64), nullable=False),
    Column("settings_hash", String(64), nullable=False),
    Column("settings", JSON, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("samples", JSON, nullable=False),
    Column("copies", JSON, nullable=False),
    Column("seconds", Float, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Index("ix_evaluations_subject", "subject", "dataset_hash", "settings_hash"),
)

promotions = Table(
    "promotions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False),
    Column("alias", String(64), nullable=False),
    Column("from_version", Integer),
    Column("to_version", Integer, nullable=False),
    Column("promoted", Boolean, nullable=False),
    Column("forced", Boolean, nullable=False),
    Column("who", String(100), nullable=False),
    Column("at", DateTime, nullable=False),
    Column("dataset", String(100)),
    Column("candidate", JSON, nullable=False),
    Column("champion", JSON),
    Column("reason", Text, nullable=False),
)

experiments = Table(
    "experiments",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("metric", String(16), nullable=False),
    Column("min_sample", Integer, nullable=False),
    Column("alpha", Float, nullable=False),
    Column("auto_promote", Boolean, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("stopped_at", DateTime),
    Column("winner", String(64)),
)

experiment_variants = Table(
    "experiment_variants",
    metadata,
    Column("experiment", ForeignKey("experiments.name", ondelete="CASCADE"), primary_key=True),
    Column("variant", String(64), primary_key=True),
    Column("model_name", String(100), nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("weight", Float, nullable=False),
)

generations = Table(
    "generations",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("created_at", DateTime, nullable=False),
    Column("model_name", String(100), nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("experiment", String(100)),
    Column("variant", String(64)),
    Column("pair_id", String(36)),  # arena: the two generations shown side by side share it
    Column("user_id", String(100)),
    Column("prompt", Text, nullable=False),
    Column("params", JSON, nullable=False),
    Column("posts", JSON, nullable=False),
    Index("ix_generations_experiment", "experiment", "variant"),
    Index("ix_generations_pair", "pair_id"),
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("generation_id", ForeignKey("generations.id"), nullable=False),
    Column("event", String(16), nullable=False),
    Column("winner_id", String(36)),  # choice: the generation that won; null for "both bad"
    Column("user_id", String(100)),
    Column("created_at", DateTime, nullable=False),
    Index("ix_feedback_generation", "generation_id"),
)

experiment_decisions = Table(
    "experiment_decisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("experiment", String(100), nullable=False),
    Column("at", DateTime, nullable=False),
    Column("state", String(32), nullable=False),
    Column("winner", String(64)),
    Column("promoted", Boolean, nullable=False),
    Column("statistics", JSON, nullable=False),
)
