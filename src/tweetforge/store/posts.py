"""Writing posts: one import is one transaction that stages the posts and merges them set-based, so
re-importing adds nothing, an edited text keeps its old version in history, and a failure changes nothing."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from sqlalchemy import Connection, and_, delete, exists, func, insert, literal, select, update

from tweetforge.post import Post
from tweetforge.store.schema import (
    POST_COLUMNS,
    optouts,
    post_history,
    post_imports,
    posts,
    staging_posts,
)

STAGE_BATCH = 20_000


@dataclass
class MergeCounts:
    new: int
    updated: int
    unchanged: int


def begin_staging(conn: Connection) -> None:
    staging_posts.create(conn, checkfirst=True)
    conn.execute(delete(staging_posts))


def stage(conn: Connection, batch: Iterable[Post]) -> None:
    """Bulk-insert posts into the staging table through the driver's executemany: SQLAlchemy's
    per-row parameter processing would cost more than the insert itself on large imports."""
    if conn.dialect.name == "sqlite":
        # the text form SQLAlchemy's SQLite DateTime type writes and reads back
        def when(p: Post) -> str | None:
            return p.created_at.isoformat(" ", "microseconds") if p.created_at else None
    else:
        def when(p: Post):  # type: ignore[no-untyped-def]
            return p.created_at
    rows = [
        (p.network, p.post_id, p.author, p.text, when(p), p.is_retweet, p.reply_to, p.likes, p.reposts, p.language)
        for p in batch
    ]
    if rows:
        conn.exec_driver_sql(_staging_insert_sql(conn), rows)


def _staging_insert_sql(conn: Connection) -> str:
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    return f"INSERT INTO {staging_posts.name} ({', '.join(POST_COLUMNS)}) VALUES ({', '.join([marker] * len(POST_COLUMNS))})"


def merge_staged(conn: Connection, import_id: int) -> MergeCounts:
    s, p = staging_posts, posts
    counted = {"preserve_rowcount": True}  # psycopg reports -1 for INSERT ... SELECT otherwise
    same_post = and_(p.c.network == s.c.network, p.c.post_id == s.c.post_id)
    edited = select(p.c.network, p.c.post_id, p.c.text, literal(import_id)).join(s, same_post).where(p.c.text != s.c.text)
    updated = conn.execute(
        insert(post_history).from_select(["network", "post_id", "text", "replaced_by_import_id"], edited),
        execution_options=counted,
    ).rowcount
    if updated:
        conn.execute(
            update(p)
            .where(same_post, p.c.text != s.c.text)
            .values(
                text=s.c.text,
                likes=func.coalesce(s.c.likes, p.c.likes),
                reposts=func.coalesce(s.c.reposts, p.c.reposts),
                updated_import_id=import_id,
            )
        )
    new_rows = select(*[s.c[name] for name in POST_COLUMNS], literal(import_id)).where(~exists().where(same_post))
    new = conn.execute(insert(p).from_select([*POST_COLUMNS, "first_import_id"], new_rows), execution_options=counted).rowcount
    total = conn.execute(
        insert(post_imports).from_select(["network", "post_id", "import_id"], select(s.c.network, s.c.post_id, literal(import_id))),
        execution_options=counted,
    ).rowcount
    conn.execute(delete(s))
    return MergeCounts(new=new, updated=updated, unchanged=total - new - updated)


def opted_out_handles(conn: Connection) -> set[str]:
    return {row.handle for row in conn.execute(select(optouts.c.handle))}


POST_FRAME_SCHEMA = {
    "network": pl.String,
    "post_id": pl.String,
    "author": pl.String,
    "text": pl.String,
    "created_at": pl.Datetime("us"),
    "is_retweet": pl.Boolean,
    "reply_to": pl.String,
    "likes": pl.Int64,
    "reposts": pl.Int64,
    "language": pl.String,
    "first_import_id": pl.Int64,
}


def read_posts(
    conn: Connection,
    authors: Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> pl.DataFrame:
    """Stored posts as a Polars frame (raw text), never those of opted-out authors. Authors match
    case-insensitively, as handles do."""
    query = select(*[posts.c[name] for name in POST_COLUMNS], posts.c.first_import_id).where(
        func.lower(posts.c.author).not_in(select(optouts.c.handle))
    )
    if authors:
        query = query.where(func.lower(posts.c.author).in_([a.lstrip("@").lower() for a in authors]))
    if since is not None:
        query = query.where(posts.c.created_at >= since)
    if until is not None:
        query = query.where(posts.c.created_at < until)
    rows = conn.execute(query).all()
    return pl.DataFrame([tuple(r) for r in rows], schema=POST_FRAME_SCHEMA, orient="row")


def known_authors(conn: Connection) -> dict[str, int]:
    """Every stored author (opted-out ones included) with their post count."""
    query = select(posts.c.author, func.count()).group_by(posts.c.author).order_by(func.count().desc())
    return {author: n for author, n in conn.execute(query)}
