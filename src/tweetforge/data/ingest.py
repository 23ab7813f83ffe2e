"""The ingest stage: read a source, refuse opted-out authors, stop at (or skip) bad records, and merge
everything into the store in one transaction recorded as an import run.

Reading and staging take no write lock on the store (the staging table is the connection's own): the
server recording feedback, or another import, go on meanwhile. Only the merge holds the lock."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, insert, update

from tweetforge.data.generated import generated_fingerprints, record_refusals, text_fingerprint
from tweetforge.data.post import BadRecord, Post
from tweetforge.data.sources import Source, SourceError
from tweetforge.data.store import (
    STAGE_BATCH,
    begin_staging,
    gc_paused,
    import_cache,
    merge_staged,
    opted_out_handles,
    stage,
    staged_author_conflicts,
    unstage_author_conflicts,
)
from tweetforge.db.engine import write_transaction
from tweetforge.db.schema import import_skips, imports

MERGE_WAIT_S = 3600
"""How long an import that has read its whole file waits for another writer before giving up."""


@dataclass
class ImportResult:
    import_id: int
    source: str
    format: str
    records: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    repeated: int = 0
    """Records whose id appeared earlier in the same file with the same text."""
    refused: int = 0
    """Posts of opted-out authors."""
    generated: int = 0
    """Posts whose text tweetforge generated (the generation log): never training data."""
    skipped: list[BadRecord] = field(default_factory=list)
    authors: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0


def now_utc() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def ingest(
    engine: Engine,
    source: Source,
    skip_bad: bool = False,
    progress: Callable[[int], None] | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> ImportResult:
    """Import a source in one transaction. Raises SourceError (the store unchanged) on the first bad
    record unless skip_bad, and when every post was refused. on_wait hears once that the merge waits for
    another writer (SQLite)."""
    started = time.perf_counter()
    try:
        # Hash the file on the other core while this one parses it (hashlib and file reads release the GIL).
        with ThreadPoolExecutor(max_workers=1) as hasher:
            fingerprint = hasher.submit(source.fingerprint)
            return _ingest(engine, source, skip_bad, progress, on_wait, started, fingerprint)
    except (OSError, LookupError) as exc:  # unreadable file, unknown encoding
        raise SourceError(source.spec, str(exc)) from None


def _ingest(
    engine: Engine,
    source: Source,
    skip_bad: bool,
    progress: Callable[[int], None] | None,
    on_wait: Callable[[str], None] | None,
    started: float,
    fingerprint: Future[str],
) -> ImportResult:
    started_at = now_utc()
    with engine.connect() as conn, import_cache(conn):
        with conn.begin():
            staged = _stage_source(conn, source, skip_bad, progress)
        file_hash = fingerprint.result()
        with write_transaction(conn, on_wait, wait_s=MERGE_WAIT_S):
            return _merge(conn, source, staged, started_at, started, file_hash)


@dataclass
class Staged:
    """What reading a source left in the connection's staging table, and what it refused."""

    result: ImportResult
    blocked: set[str]
    refused_generated: list[Post]
    skip_bad: bool


def _stage_source(conn: Connection, source: Source, skip_bad: bool, progress: Callable[[int], None] | None) -> Staged:
    where = source.spec
    result = ImportResult(import_id=0, source=source.spec, format=source.format)
    blocked = opted_out_handles(conn)
    ours = generated_fingerprints(conn)
    begin_staging(conn)
    first_seen: dict[tuple[str, str], tuple[int, int]] = {}
    """(network, post_id) -> (hash of the text, record) of its first occurrence in this source."""
    authors = result.authors
    skipped = result.skipped
    batch: list[Post] = []
    refused_generated: list[Post] = []
    records = repeated = refused = generated = 0
    with gc_paused():
        for item in source.posts():
            records += 1
            if isinstance(item, BadRecord):
                if not skip_bad:
                    raise SourceError(where, f"{item.location}: {item.reason} (--skip-bad imports the other records)")
                skipped.append(item)
                continue
            key = (item.network, item.post_id)
            text_hash = hash(item.text)
            earlier = first_seen.get(key)
            if earlier is not None:
                if text_hash == earlier[0]:
                    repeated += 1
                    continue
                reason = f"id {item.post_id} already appeared at line {earlier[1]} with a different text"
                if not skip_bad:
                    raise SourceError(where, f"line {item.record}: {reason} (--skip-bad keeps the first)")
                skipped.append(BadRecord(f"line {item.record}", reason))
                continue
            first_seen[key] = (text_hash, item.record)
            author = item.author
            if blocked and author.lower() in blocked:
                refused += 1
                continue
            if ours and text_fingerprint(item.text) in ours:
                generated += 1
                refused_generated.append(item)
                continue
            authors[author] = authors.get(author, 0) + 1
            batch.append(item)
            if len(batch) >= STAGE_BATCH:
                stage(conn, batch)
                batch.clear()
                if progress:
                    progress(records)
    stage(conn, batch)
    result.records, result.repeated, result.refused, result.generated = records, repeated, refused, generated
    if progress:
        progress(result.records)
    if result.refused and not result.authors:
        raise SourceError(where, f"all {result.refused:,} posts are by opted-out authors: nothing imported")
    if generated and not result.authors:
        raise SourceError(where, f"all {generated:,} posts are texts tweetforge generated: nothing imported")
    if not result.authors and not result.repeated and not result.refused:
        raise SourceError(where, "no readable posts" + (f" ({len(result.skipped)} bad records skipped)" if result.skipped else ""))
    return Staged(result, blocked, refused_generated, skip_bad)


def _refuse_other_authors_ids(conn: Connection, source: Source, staged: Staged) -> None:
    """A record whose id is stored under another author is refused (skipped with --skip-bad): merging it
    would rewrite someone else's post."""
    conflicts = staged_author_conflicts(conn)
    if not conflicts:
        return
    network, post_id, stored, claimed = conflicts[0]
    if not staged.skip_bad:
        more = f" (and {len(conflicts) - 1:,} more)" if len(conflicts) > 1 else ""
        raise SourceError(source.spec, f"{network} post {post_id} is stored as @{stored}'s, this source gives it to @{claimed}{more}: "
                                       "an id never changes author (--skip-bad imports the other records)")
    unstage_author_conflicts(conn)
    result = staged.result
    for network, post_id, stored, claimed in conflicts:
        result.skipped.append(BadRecord(f"{network} post {post_id}", f"stored as @{stored}'s, this source gives it to @{claimed}"))
        result.authors[claimed] -= 1
        if not result.authors[claimed]:
            del result.authors[claimed]


def _merge(conn: Connection, source: Source, staged: Staged, started_at: datetime, started: float, file_hash: str) -> ImportResult:
    """Record the import run and merge the staged posts, under the store's write lock."""
    result = staged.result
    newly_opted_out = opted_out_handles(conn) - staged.blocked
    opted_out_meanwhile = sorted(a for a in result.authors if a.lower() in newly_opted_out)
    if opted_out_meanwhile:
        raise SourceError(source.spec, f"@{opted_out_meanwhile[0]} opted out while this import ran: nothing imported, run it again")
    _refuse_other_authors_ids(conn, source, staged)
    result.import_id = import_id = conn.execute(
        insert(imports).values(
            source=source.spec,
            format=source.format,
            file_hash=file_hash,
            author_override=source.options.author,
            started_at=started_at,
        )
    ).inserted_primary_key[0]
    counts = merge_staged(conn, import_id)
    record_refusals(conn, staged.refused_generated, import_id)
    result.new, result.updated, result.unchanged = counts.new, counts.updated, counts.unchanged
    if result.skipped:
        conn.execute(
            insert(import_skips),
            [{"import_id": import_id, "n": n, "location": b.location, "reason": b.reason} for n, b in enumerate(result.skipped)],
        )
    result.duration_s = time.perf_counter() - started
    conn.execute(
        update(imports)
        .where(imports.c.id == import_id)
        .values(
            duration_s=result.duration_s,
            records=result.records,
            new=result.new,
            updated=result.updated,
            unchanged=result.unchanged,
            repeated=result.repeated,
            skipped=len(result.skipped),
            refused=result.refused,
            generated=result.generated,
        )
    )
    return result
