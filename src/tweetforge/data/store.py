"""Writing posts: one import is one transaction that stages the posts and merges them set-based, so
re-importing adds nothing, an edited text keeps its old version in history, and a failure changes nothing."""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain

import polars as pl
from sqlalchemy import (
    Connection,
    and_,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError

from tweetforge.data.post import Post
from tweetforge.db.schema import (
    POST_COLUMNS,
    optouts,
    post_history,
    post_imports,
    posts,
    staging_posts,
)

STAGE_BATCH = 20_000


@contextmanager
def gc_paused() -> Iterator[None]:
    """Bulk loops create millions of objects that live until the loop ends and form no reference
    cycles; the cyclic collector would scan them again and again (a fifth of an import's time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


SQLITE_DEFAULT_CACHE_SIZE = -2000
IMPORT_CACHE_KIB = 65_536
"""SQLite page cache (main and temp database) while an import merges: random ids (derived hashes) would
otherwise thrash the default 2 MiB cache when they go into the primary-key indexes."""


@contextmanager
def import_cache(conn: Connection) -> Iterator[None]:
    """A larger SQLite page cache for this connection during an import, restored afterwards."""
    if conn.dialect.name != "sqlite":
        yield
        return
    raw = conn.connection.dbapi_connection  # beside SQLAlchemy's transactions: the import begins its own
    saved = {schema: raw.execute(f"PRAGMA {schema}.cache_size").fetchone()[0] for schema in ("main", "temp")}
    for schema in saved:
        raw.execute(f"PRAGMA {schema}.cache_size = -{IMPORT_CACHE_KIB}")
    try:
        yield
    finally:
        for schema, size in saved.items():
            # an opened temp database reports 0 while it uses the default size; setting 0 would shrink it
            raw.execute(f"PRAGMA {schema}.cache_size = {int(size) or SQLITE_DEFAULT_CACHE_SIZE}")


@dataclass
class MergeCounts:
    new: int
    updated: int
    unchanged: int


def begin_staging(conn: Connection) -> None:
    staging_posts.create(conn, checkfirst=True)
    conn.execute(delete(staging_posts))


ROWS_PER_INSERT = 50
"""Rows per multi-row INSERT statement: fewer statements to step through, 500 parameters (within
every SQLite build's limit)."""


def _staging_insert_sql(conn: Connection, rows: int = 1) -> str:
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    values = ", ".join([f"({', '.join([marker] * len(POST_COLUMNS))})"] * rows)
    return f"INSERT INTO {staging_posts.name} ({', '.join(POST_COLUMNS)}) VALUES {values}"


def insert_into_staging(conn: Connection, batch: Iterable[Post]) -> None:
    """Multi-row INSERTs through the driver's executemany: SQLAlchemy's per-row parameter processing
    would cost more than the insert itself on large imports."""
    # SQLite gets the text form SQLAlchemy's SQLite DateTime type writes and reads back
    as_text = conn.dialect.name == "sqlite"
    rows = [
        (p.network, p.post_id, p.author, p.text,
         p.created_at.isoformat(" ", "microseconds") if as_text and p.created_at else p.created_at,
         p.is_retweet, p.reply_to, p.likes, p.reposts, p.language)
        for p in batch
    ]
    whole = len(rows) - len(rows) % ROWS_PER_INSERT
    if whole:
        flat = list(chain.from_iterable(rows[:whole]))
        width = ROWS_PER_INSERT * len(POST_COLUMNS)
        conn.exec_driver_sql(
            _staging_insert_sql(conn, ROWS_PER_INSERT), [tuple(flat[i : i + width]) for i in range(0, len(flat), width)]
        )
    if whole < len(rows):
        conn.exec_driver_sql(_staging_insert_sql(conn), rows[whole:])


COPY_INTO_STAGING = f"COPY {staging_posts.name} ({', '.join(POST_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
STAGING_COPY_TYPES = ("text", "text", "text", "text", "timestamp", "bool", "text", "int8", "int8", "text")
"""PostgreSQL types of POST_COLUMNS as the binary COPY sends them (varchar columns take text)."""


def _utc_naive(moment: datetime) -> datetime:
    """An aware time as the INSERT path stores it on a UTC session (the server converts a timestamptz);
    a COPY would otherwise drop the offset. Sources yield naive UTC times already."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def copy_into_staging(conn: Connection, batch: Iterable[Post]) -> None:
    """COPY FROM STDIN on the transaction's own psycopg connection: one stream instead of thousands of
    INSERT statements for the server to parse and plan, and binary rows the driver packs in C."""
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        with conn.connection.driver_connection.cursor() as cursor, cursor.copy(COPY_INTO_STAGING) as copy:
            copy.set_types(STAGING_COPY_TYPES)
            write = copy.write_row
            for p in batch:
                created_at = p.created_at
                if created_at is not None and created_at.tzinfo is not None:
                    created_at = _utc_naive(created_at)
                write((p.network, p.post_id, p.author, p.text, created_at,
                       p.is_retweet, p.reply_to, p.likes, p.reposts, p.language))
    except dbapi_error as exc:
        # the same exception classes as the INSERT path raises through SQLAlchemy (the service maps them)
        raise DBAPIError.instance(COPY_INTO_STAGING, None, exc, dbapi_error, dialect=conn.dialect) from exc


STAGE_WITH = "stage_with"
"""Execution option choosing how stage() writes on PostgreSQL (psycopg 3): "copy", the default, or
"insert", the multi-row INSERTs every other database gets (the baseline of benchmarks/ingest.py):
`ingest(engine.execution_options(stage_with="insert"), source)`."""


def stage(conn: Connection, batch: Iterable[Post]) -> None:
    """Bulk-write posts into the staging table, in the caller's transaction."""
    method = conn.get_execution_options().get(STAGE_WITH, "copy")
    if method not in ("copy", "insert"):
        raise ValueError(f"{STAGE_WITH} must be 'copy' or 'insert', not {method!r}")
    if method == "copy" and conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        copy_into_staging(conn, batch)
    else:
        insert_into_staging(conn, batch)


def _stored_under_another_author():  # type: ignore[no-untyped-def]
    s, p = staging_posts, posts
    return and_(p.c.network == s.c.network, p.c.post_id == s.c.post_id, func.lower(p.c.author) != func.lower(s.c.author))


def staged_author_conflicts(conn: Connection) -> list[tuple[str, str, str, str]]:
    """(network, post_id, stored author, staged author) of staged posts whose id is stored under another
    author: an id never changes author, so such a record is another post (or a forged one), never an edit."""
    s, p = staging_posts, posts
    query = select(s.c.network, s.c.post_id, p.c.author, s.c.author).join(p, _stored_under_another_author()).order_by(s.c.network, s.c.post_id)
    return [tuple(row) for row in conn.execute(query)]


def unstage_author_conflicts(conn: Connection) -> None:
    conn.execute(delete(staging_posts).where(exists().where(_stored_under_another_author())))


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
    limit: int | None = None,
) -> pl.DataFrame:
    """Stored posts as a Polars frame (raw text), never those of opted-out authors nor posts a live sync
    found deleted. Authors match case-insensitively, as handles do. With limit, the first posts in time."""
    query = select(*[posts.c[name] for name in POST_COLUMNS], posts.c.first_import_id).where(
        func.lower(posts.c.author).not_in(select(optouts.c.handle)), posts.c.deleted_at.is_(None)
    )
    if authors:
        query = query.where(func.lower(posts.c.author).in_([a.lstrip("@").lower() for a in authors]))
    if since is not None:
        query = query.where(posts.c.created_at >= since)
    if until is not None:
        query = query.where(posts.c.created_at < until)
    if limit is not None:
        query = query.order_by(posts.c.created_at, posts.c.network, posts.c.post_id).limit(limit)
    return _fetch_frame(conn, query)


READ_CHUNK = 20_000


def _fetch_frame(conn: Connection, query) -> pl.DataFrame:  # type: ignore[no-untyped-def]
    """Rows straight from the DBAPI cursor into Polars columns, a chunk at a time. SQLAlchemy's result
    processing (a Row and a datetime parse per post) would cost more than the query; the same
    conversions are made here per column: SQLite's DATETIME text, and its 0/1 booleans."""
    result = conn.execute(query)
    try:
        cursor = result.cursor
        dialect = conn.dialect
        processors = [
            posts.c[name].type.dialect_impl(dialect).result_processor(dialect, description[1])
            for name, description in zip(POST_FRAME_SCHEMA, cursor.description)
        ]
        parts = []
        with gc_paused():
            while chunk := cursor.fetchmany(READ_CHUNK):
                parts.append(
                    pl.DataFrame(
                        [
                            _column(name, dtype, values, process)
                            for (name, dtype), values, process in zip(POST_FRAME_SCHEMA.items(), zip(*chunk), processors)
                        ]
                    )
                )
    finally:
        result.close()
    return pl.concat(parts, rechunk=True) if parts else pl.DataFrame(schema=POST_FRAME_SCHEMA)


def _column(name: str, dtype: pl.DataType, values: tuple, process) -> pl.Series:  # type: ignore[no-untyped-def]
    if process is None:
        return pl.Series(name, values, dtype=dtype)
    try:
        if dtype == pl.Datetime("us"):
            text = pl.Series(name, values, dtype=pl.String)  # TypeError unless all are text (or null)
            # the form the SQLite DateTime type writes; anything else goes through SQLAlchemy's own parser
            if (text.str.len_bytes() == 26).all():
                parsed = text.str.to_datetime("%Y-%m-%d %H:%M:%S%.6f", time_unit="us", strict=False)
                if parsed.null_count() == text.null_count():
                    return parsed
        elif dtype == pl.Boolean:
            return pl.Series(name, values, dtype=pl.Int64).cast(pl.Boolean)  # TypeError unless all are integers
    except TypeError:
        pass
    return pl.Series(name, [process(v) for v in values], dtype=dtype)
