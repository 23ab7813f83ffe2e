"""Following accounts on live networks: the first `ingest network:handle` reads the account's posts,
every later one (or `sync`) reads only what is new.

A sync walks the account's feed from the newest post back to the newest post of the last complete sync
(the cursor). Each page goes into the store in one transaction together with where the walk stands, so
a sync killed at any instant keeps every page it committed; the next one continues the stopped walk
from its resume token down to the old cursor, then reads what arrived in the meantime. Posts go
through the same staging merge as file imports: the same identity (network, post id), the same edit
history, the same import log and the same opt-out refusal."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial

from sqlalchemy import Connection, Engine, and_, func, insert, select, update

from tweetforge.data.generated import generated_fingerprints, record_refusals, text_fingerprint
from tweetforge.data.ingest import now_utc
from tweetforge.data.post import BadRecord, Post
from tweetforge.data.sources.fields import checked
from tweetforge.data.sources.live import (
    PREFIX,
    Account,
    Handle,
    LiveClient,
    LiveError,
    Page,
    Politeness,
    Retryable,
    Unreadable,
    open_client,
)
from tweetforge.data.store import begin_staging, merge_staged, opted_out_handles, stage
from tweetforge.db.engine import writing
from tweetforge.db.locks import holder, holder_alive
from tweetforge.db.schema import imports, posts, sources

LOCK_STALE_S = 15 * 60
"""A lock whose holder has not committed a page for this long is taken over (the holder is gone)."""


class SyncLocked(LiveError):
    """Another process is syncing the account."""


@dataclass
class SyncProgress:
    spec: str
    fetched: int = 0
    pages: int = 0
    total: int | None = None
    waiting_s: float = 0.0
    why: str = ""


@dataclass
class SyncResult:
    spec: str
    network: str
    account: str
    import_id: int | None = None
    pages: int = 0
    requests: int = 0
    fetched: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    refused: int = 0
    generated: int = 0
    deleted: int = 0
    unusable: int = 0
    """Posts the server sent that no store can take (absurd dates, overlong fields): left out, the first named in notes."""
    waited_s: float = 0.0
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def follow(engine: Engine, handle: Handle, account: Account, *, base_url: str | None) -> int:
    """The sources row of this account (made on first use); the handle is kept up to date."""
    with writing(engine) as conn:
        row = conn.execute(
            select(sources.c.id).where(sources.c.network == handle.network, sources.c.account_id == account.account_id)
        ).first()
        if row is not None:
            values = {"account": account.account} | ({"base_url": base_url} if base_url else {})
            conn.execute(update(sources).where(sources.c.id == row.id).values(**values))
            return row.id
        return conn.execute(
            insert(sources).values(
                network=handle.network, account=account.account, account_id=account.account_id, base_url=base_url,
                added_at=now_utc(), syncs=0, posts=0, requests=0,
            )
        ).inserted_primary_key[0]


def _lock(engine: Engine, source_id: int, spec: str) -> None:
    me = holder()
    with writing(engine) as conn:
        row = conn.execute(select(sources.c.locked_by, sources.c.locked_at).where(sources.c.id == source_id)).one()
        free = sources.c.locked_by.is_(None)
        if row.locked_by is not None:
            stale = row.locked_at is not None and row.locked_at < now_utc() - timedelta(seconds=LOCK_STALE_S)
            if not stale and holder_alive(row.locked_by):
                raise SyncLocked(spec, f"already being synced by {row.locked_by} since {row.locked_at:%Y-%m-%d %H:%M:%S} UTC; "
                                       "try again when it ends")
            free = sources.c.locked_by == row.locked_by  # the holder is gone: take its lock over
        taken = conn.execute(
            update(sources).where(sources.c.id == source_id, free).values(locked_by=me, locked_at=now_utc())
        ).rowcount
        if not taken:
            raise SyncLocked(spec, "another process took the sync lock at the same moment; try again when it ends")


def _unlock(engine: Engine, source_id: int, error: str | None) -> None:
    with writing(engine) as conn:
        conn.execute(
            update(sources)
            .where(sources.c.id == source_id, sources.c.locked_by == holder())
            .values(locked_by=None, locked_at=None, last_sync_at=now_utc(), last_error=error, syncs=sources.c.syncs + 1)
        )


class _Writer:
    """Commits one page at a time: its posts, the import log's counts and the walk's position, together."""

    def __init__(self, engine: Engine, source_id: int, result: SyncResult, client: LiveClient, politeness: Politeness):
        self.engine = engine
        self.source_id = source_id
        self.result = result
        self.client = client
        self.politeness = politeness
        self.requests_committed = 0
        self.ours: set[bytes] | None = None
        """Fingerprints of every post tweetforge generated, read once per sync."""

    def commit(self, page: Page, position: dict) -> None:
        result = self.result
        with writing(self.engine) as conn:
            blocked = opted_out_handles(conn)
            if self.ours is None:
                self.ours = generated_fingerprints(conn)
            ours = self.ours
            kept: dict[tuple[str, str], Post] = {}
            refused_generated = []
            for post in page.posts:
                shown = post.post_id if len(post.post_id) <= 80 else f"{post.post_id[:40]}…{post.post_id[-20:]}"
                bad = checked(post, f"{post.network} post {shown}")
                if isinstance(bad, BadRecord):  # an instance is whoever runs it: its answers are untrusted input
                    result.unusable += 1
                    if result.unusable <= 3:
                        result.notes.append(f"{bad.location}: {bad.reason}; left out")
                elif blocked and post.author.lower() in blocked:
                    result.refused += 1
                elif ours and text_fingerprint(post.text) in ours:
                    result.generated += 1
                    refused_generated.append(post)
                else:
                    kept.setdefault((post.network, post.post_id), post)
            if (kept or refused_generated) and result.import_id is None:
                result.import_id = self._open_import(conn)
            if refused_generated:
                record_refusals(conn, refused_generated, result.import_id)
            if kept:
                begin_staging(conn)
                stage(conn, kept.values())
                counts = merge_staged(conn, result.import_id)
                result.new += counts.new
                result.updated += counts.updated
                result.unchanged += counts.unchanged
                conn.execute(  # a post a recheck took for deleted is back
                    update(posts)
                    .where(posts.c.network == result.network, posts.c.post_id.in_([k[1] for k in kept]), posts.c.deleted_at.is_not(None))
                    .values(deleted_at=None)
                )
            result.fetched += len(page.posts)
            result.pages += 1
            if result.import_id is not None:
                self._log_counts(conn)
            requests = self.politeness.requests - self.requests_committed
            self.requests_committed = self.politeness.requests
            conn.execute(
                update(sources)
                .where(sources.c.id == self.source_id)
                .values(**position, locked_at=now_utc(), posts=sources.c.posts + len(kept), requests=sources.c.requests + requests)
            )

    def _open_import(self, conn: Connection) -> int:
        return conn.execute(
            insert(imports).values(source=self.result.spec, format=self.result.network, file_hash="", started_at=now_utc())
        ).inserted_primary_key[0]

    def _log_counts(self, conn: Connection) -> None:
        r = self.result
        conn.execute(
            update(imports)
            .where(imports.c.id == r.import_id)
            .values(records=r.fetched, new=r.new, updated=r.updated, unchanged=r.unchanged, refused=r.refused,
                    generated=r.generated, duration_s=r.duration_s)
        )


def _walk(client: LiveClient, account: Account, writer: _Writer, politeness: Politeness, state, tell: Callable[[Page], None]) -> None:  # type: ignore[no-untyped-def]
    """Page back from the newest post to the cursor; a stopped walk is finished first."""
    cursor, cursor_at = state.cursor, state.cursor_at
    top, top_at, resume = state.walk_top, state.walk_top_at, state.walk_resume
    resumed = resume is not None
    while True:
        page = politeness.call(client, partial(client.page, account, since=cursor, since_at=cursor_at, before=resume))
        if resume is None:
            if page.newest is None:  # nothing newer than the cursor
                writer.commit(page, {})
                return
            top, top_at = page.newest, page.newest_at
        tell(page)
        if page.next is None:  # the walk reached the cursor, or the account's first post
            cursor, cursor_at, resume = top, top_at, None
            writer.commit(page, {"cursor": cursor, "cursor_at": cursor_at, "walk_top": None, "walk_top_at": None, "walk_resume": None})
            if not resumed:
                return
            resumed = False  # posts may have arrived since the stopped walk began: one fresh walk
        else:
            resume = page.next
            writer.commit(page, {"walk_top": top, "walk_top_at": top_at, "walk_resume": resume})


def _recheck(engine: Engine, client: LiveClient, account: Account, writer: _Writer, politeness: Politeness,
             days: float, network: str, tell: Callable[[Page], None]) -> int:
    """Re-read the last `days` of the feed: edits replace texts; a stored post not there any more is deleted."""
    window_start = now_utc() - timedelta(days=days)
    seen: set[str] = set()
    resume = None
    while True:
        page = politeness.call(client, partial(client.page, account, since=None, since_at=None, before=resume))
        tell(page)
        seen.update(page.seen)
        writer.commit(page, {})
        if page.next is None or (page.oldest_at is not None and page.oldest_at < window_start):
            break
        resume = page.next
    with writing(engine) as conn:
        mine = and_(
            posts.c.network == network, func.lower(posts.c.author) == account.account.lower(),
            posts.c.created_at >= window_start, posts.c.deleted_at.is_(None),
        )
        stored = [row.post_id for row in conn.execute(select(posts.c.post_id).where(mine))]
        gone = [post_id for post_id in stored if post_id not in seen]
        for start in range(0, len(gone), 500):
            conn.execute(update(posts).where(mine, posts.c.post_id.in_(gone[start : start + 500])).values(deleted_at=now_utc()))
    return len(gone)


def sync_account(
    engine: Engine,
    handle: Handle,
    *,
    base_url: str | None = None,
    recheck_days: float | None = None,
    client: LiveClient | None = None,
    progress: Callable[[SyncProgress], None] | None = None,
) -> SyncResult:
    """Follow the account if new, then fetch what is new since its last sync (and re-read the last
    recheck_days for edits and deletions). Raises LiveError naming the account and what was committed."""
    from tweetforge.config import get_settings

    started = time.perf_counter()
    settings = get_settings()
    spec = handle.spec
    with engine.connect() as conn:
        known = conn.execute(
            select(sources).where(sources.c.network == handle.network,
                                  (func.lower(sources.c.account) == handle.account.lower()) | (sources.c.account_id == handle.account))
        ).first()
    base_url = base_url or (known.base_url if known is not None else None)
    client = client or open_client(handle, base_url=base_url)
    shown = SyncProgress(spec)
    politeness = Politeness(retries=settings.sync_retries, backoff_s=settings.sync_backoff_s)

    def on_wait(seconds: float, why: str) -> None:
        shown.waiting_s, shown.why = seconds, why
        if progress:
            progress(shown)
        shown.waiting_s, shown.why = 0.0, ""

    politeness.on_wait = on_wait
    try:
        account = politeness.call(client, lambda: client.lookup(handle.account))
    except (Unreadable, Retryable) as exc:
        raise LiveError(spec, str(exc)) from None
    with engine.connect() as conn:
        if account.account.lower() in opted_out_handles(conn) or handle.account.lower() in opted_out_handles(conn):
            raise LiveError(spec, f"{account.account} has opted out of being modelled: nothing fetched")
    source_id = follow(engine, handle, account, base_url=base_url)
    spec = f"{PREFIX[handle.network]}:{account.account}"
    shown.spec, shown.total = spec, account.posts
    result = SyncResult(spec=spec, network=handle.network, account=account.account)
    writer = _Writer(engine, source_id, result, client, politeness)

    def tell(page: Page) -> None:
        shown.fetched += len(page.seen)
        shown.pages += 1
        if page.note and page.note not in result.notes:
            result.notes.append(page.note)
        if progress:
            progress(shown)

    _lock(engine, source_id, spec)
    error = None
    try:
        with engine.connect() as conn:
            state = conn.execute(select(sources).where(sources.c.id == source_id)).one()
        _walk(client, account, writer, politeness, state, tell)
        if recheck_days:
            result.deleted = _recheck(engine, client, account, writer, politeness, recheck_days, handle.network, tell)
    except (Unreadable, Retryable) as exc:
        error = str(exc)
        raise LiveError(spec, f"{exc}; {result.new:,} new posts of {result.pages:,} pages were committed before it, "
                              "and the next sync continues from there") from None
    except BaseException as exc:
        error = f"stopped: {type(exc).__name__}"
        raise
    finally:
        result.requests, result.waited_s = politeness.requests, politeness.waited_s
        result.duration_s = time.perf_counter() - started
        if result.import_id is not None:
            with writing(engine) as conn:
                writer._log_counts(conn)
        _unlock(engine, source_id, error)
    return result


def followed(engine: Engine) -> list[dict]:
    """Every followed account with its cursor, last sync, counts and last error."""
    with engine.connect() as conn:
        rows = conn.execute(select(sources).order_by(sources.c.network, sources.c.account)).all()
        author = func.lower(posts.c.author)
        counts = {
            (network, who): n
            for network, who, n in conn.execute(
                select(posts.c.network, author, func.count()).where(posts.c.deleted_at.is_(None)).group_by(posts.c.network, author)
            )
        }
    return [
        {
            "source": f"{PREFIX[r.network]}:{r.account}", "network": r.network, "account": r.account,
            "account_id": r.account_id, "cursor": r.cursor, "part_way": r.walk_resume is not None,
            "last_sync_at": r.last_sync_at, "syncs": r.syncs, "fetched": r.posts, "requests": r.requests,
            "stored": counts.get((r.network, r.account.lower()), 0), "last_error": r.last_error,
            "locked_by": r.locked_by, "base_url": r.base_url,
        }
        for r in rows
    ]


def sync_followed(
    engine: Engine,
    *,
    recheck_days: float | None = None,
    progress: Callable[[SyncProgress], None] | None = None,
) -> list[SyncResult | LiveError]:
    """Every followed account once, one after the other; an account that fails is reported and the
    others still sync."""
    outcomes: list[SyncResult | LiveError] = []
    for row in followed(engine):
        try:
            outcomes.append(sync_account(engine, Handle(row["network"], row["account"]), recheck_days=recheck_days, progress=progress))
        except LiveError as exc:
            outcomes.append(exc)
    return outcomes
