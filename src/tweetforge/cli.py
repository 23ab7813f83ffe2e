"""The `tweetforge` command: each command is a thin call into a stage."""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column, Table
from typer.core import TyperGroup

from tweetforge.data.clean import OPTIONAL_STATS, STATS_COLUMNS, CleaningRules
from tweetforge.errors import TweetforgeError
from tweetforge.training.config import TrainConfig

if TYPE_CHECKING:
    from tweetforge.data.snapshots import Snapshot
    from tweetforge.evaluation.evaluate import Comparison, EvalSettings, Evaluation


class Commands(TyperGroup):
    """The command tree, printing every TweetforgeError a command raises as one line on stderr (exit 1)."""

    def invoke(self, ctx: typer.Context) -> Any:
        from sqlalchemy.exc import OperationalError

        try:
            return super().invoke(ctx)
        except TweetforgeError as exc:
            message = str(exc)
        except OperationalError as exc:
            message = _store_failure(exc)
            if message is None:
                raise
        except Exception as exc:
            message = _disk_full(exc)
            if message is None:
                raise
        errors.print(f"[bold red]Error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # names from files may look like markup
        raise typer.Exit(1) from None


def _disk_full(error: Exception) -> str | None:
    """One line naming where the disk filled up, for the error of any writer (Python, polars, safetensors…);
    None for other errors."""
    from tweetforge.config import get_settings

    if not ((isinstance(error, OSError) and error.errno == errno.ENOSPC) or "No space left on device" in str(error)):
        return None
    where = getattr(error, "filename", None) or f"the data home {get_settings().resolved_home}"
    return f"the disk is full writing {where}: free some space and run the command again"


def _store_failure(error: Any) -> str | None:
    """One line for a SQLite store that is busy (one writer at a time) or on a full disk; None for the rest."""
    from sqlalchemy.engine import make_url

    from tweetforge.config import get_settings
    from tweetforge.db.engine import BUSY_TIMEOUT_MS, is_locked

    if is_locked(error):
        return f"the store is busy: another process kept its write lock for {BUSY_TIMEOUT_MS // 1000} s; nothing was written, run the command again"
    if "disk is full" in str(error.orig):
        store = make_url(get_settings().resolved_database_url).database
        return f"the disk holding the store {store} is full: free some space and run the command again"
    return None


app = typer.Typer(
    cls=Commands,
    help="Turn someone's posts into a small language model that writes like them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
dataset_app = typer.Typer(help="Frozen, versioned training data: create, list, show.", no_args_is_help=True)
optout_app = typer.Typer(help="Authors who must never be modelled.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")
app.add_typer(optout_app, name="optout")

# Rich assumes 80 columns when output is not a terminal; tables of numbers need more when piped or logged.
_piped_width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 120
console = Console(width=_piped_width)
errors = Console(stderr=True, width=_piped_width)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def quiet_libraries() -> None:
    """Our own progress bars and messages only: transformers' per-file bars and advice go."""
    import warnings

    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", module="peft")
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


def engine():  # type: ignore[no-untyped-def]
    from tweetforge.db.engine import get_engine

    return get_engine()


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
AuthorsOption = Annotated[
    list[str] | None, typer.Option("--author", "-a", help="Only this author (repeat for several).")
]
DropReplies = Annotated[bool, typer.Option("--drop-replies", help="Drop replies.")]
KeepRetweets = Annotated[bool, typer.Option("--keep-retweets", help="Keep retweets (dropped by default).")]
StripReplyMentions = Annotated[
    bool, typer.Option("--strip-reply-mentions", help="Remove the '@a @b' chain replies start with.")
]
MentionPlaceholder = Annotated[
    str | None, typer.Option("--mention-placeholder", help="Replace every @mention with this, e.g. @user.")
]
KeepNewlines = Annotated[bool, typer.Option("--keep-newlines", help="Keep line breaks inside posts.")]
KeepDuplicates = Annotated[bool, typer.Option("--keep-duplicates", help="Keep exact duplicate posts.")]
MinWords = Annotated[
    int, typer.Option("--min-words", help="Drop posts with fewer words (not counting links, @mentions, #hashtags).")
]
Languages = Annotated[
    list[str] | None, typer.Option("--language", help="Keep only this language tag, as the source recorded it (repeat).")
]


def cleaning_rules(
    *,
    drop_replies: bool,
    keep_retweets: bool,
    strip_reply_mentions: bool,
    mention_placeholder: str | None,
    keep_newlines: bool,
    keep_duplicates: bool,
    min_words: int,
    languages: list[str] | None,
) -> CleaningRules:
    return CleaningRules(
        drop_retweets=not keep_retweets,
        drop_replies=drop_replies,
        strip_reply_mentions=strip_reply_mentions,
        mention_placeholder=mention_placeholder,
        keep_newlines=keep_newlines,
        min_words=min_words,
        drop_duplicates=not keep_duplicates,
        languages=tuple(languages or ()),
    )


def parse_day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise TweetforgeError(f"{option} {value!r} is not a date like 2019-01-01") from None


@app.command()
def ingest(
    source: Annotated[str, typer.Argument(help="A file, an X archive (ZIP or folder), or example:trump; `list` lists every import.")],
    format: Annotated[str | None, typer.Option("--format", "-f", help="Override detection (see --help of formats).")] = None,
    author: Annotated[str | None, typer.Option("--author", help="Author of every post (required where the file has none).")] = None,
    encoding: Annotated[str | None, typer.Option("--encoding", help="Text encoding, e.g. latin-1.")] = None,
    network: Annotated[str, typer.Option("--network", help="Network the posts come from.")] = "twitter",
    text_column: Annotated[str | None, typer.Option("--text-column")] = None,
    author_column: Annotated[str | None, typer.Option("--author-column")] = None,
    id_column: Annotated[str | None, typer.Option("--id-column")] = None,
    time_column: Annotated[str | None, typer.Option("--time-column")] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Import the good records and list the bad ones.")] = False,
    base_url: Annotated[str | None, typer.Option("--base-url", help="Live sources: another Bluesky AppView or PDS, a "
                                                 "Mastodon instance's address, an X API proxy (kept for later syncs).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Import posts into the store, in one transaction: a bad file changes nothing. `bsky:HANDLE`,
    `mastodon:@user@instance` and `x:@user` read an account's public posts live and follow it: the
    next ingest or `sync` fetches only what is new. `tweetforge ingest list` lists every import (a file
    named list: ./list)."""
    if source == "list":
        ingest_list(as_json)
        return
    from tweetforge.data.sources.live import is_live, parse_handle

    if is_live(source) and not Path(source).exists():
        from tweetforge.data.sync import sync_account

        with live_progress(disable=as_json) as show:
            result = sync_account(engine(), parse_handle(source), base_url=base_url, progress=show)
        print_sync(result, as_json=as_json)
        return
    from tweetforge.data.ingest import ingest as run_ingest
    from tweetforge.data.sources import ReadOptions, open_source

    options = ReadOptions(
        author=author,
        encoding=encoding,
        network=network,
        text_column=text_column,
        author_column=author_column,
        id_column=id_column,
        time_column=time_column,
    )
    src = open_source(source, format, options)
    with Progress(
        SpinnerColumn(),
        TextColumn(f"reading {src.format} [bold]{source}[/]"),
        TextColumn("{task.completed:,} records"),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
        disable=as_json or not errors.is_terminal,
    ) as bar:
        task = bar.add_task("ingest", total=None)
        result = run_ingest(engine(), src, skip_bad=skip_bad, progress=lambda n: bar.update(task, completed=n),
                            on_wait=lambda message: errors.print(f"[yellow]{message}…[/]", highlight=False))
    summary = {
        "import_id": result.import_id,
        "source": result.source,
        "format": result.format,
        "records": result.records,
        "new": result.new,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "repeated_in_file": result.repeated,
        "refused_opted_out": result.refused,
        "refused_generated": result.generated,
        "skipped": [{"location": b.location, "reason": b.reason} for b in result.skipped],
        "authors": result.authors,
        "seconds": round(result.duration_s, 3),
    }
    if as_json:
        print_json(summary)
        return
    authors = ", ".join(f"@{a} ({n:,})" for a, n in list(result.authors.items())[:5])
    console.print(
        f"Imported [bold]{source}[/] as {result.format} (import #{result.import_id}): {result.records:,} records, "
        f"[green]{result.new:,} new[/], {result.updated:,} updated, {result.unchanged:,} unchanged"
        f" in {result.duration_s:.1f} s. Authors: {authors}",
        highlight=False,
    )
    if result.repeated:
        console.print(f"{result.repeated:,} records repeated an earlier record of the same file and were counted once.")
    if result.refused:
        console.print(f"[yellow]{result.refused:,} posts of opted-out authors were refused.[/]")
    if result.generated:
        console.print(f"[yellow]{counted(result.generated, 'post')} generated by tweetforge refused: never training data.[/]")
    if result.skipped:
        console.print(f"[yellow]Skipped {len(result.skipped):,} bad records:[/]")
        for bad in result.skipped[:20]:
            console.print(f"  {bad.location}: {bad.reason}", highlight=False)
        if len(result.skipped) > 20:
            console.print(f"  … and {len(result.skipped) - 20:,} more (stored with the import, see: tweetforge ingest list --json)")


@contextmanager
def live_progress(*, disable: bool) -> Iterator[Callable]:
    """A bar per account: posts fetched (of the total the network reports), pages, and any wait."""
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}[/]"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.fields[total_text]} posts · {task.fields[pages]} pages"),
        TextColumn("[yellow]{task.fields[wait]}[/]"),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
        disable=disable or not errors.is_terminal,
    ) as bar:
        tasks: dict[str, Any] = {}

        def show(p: Any) -> None:
            if p.spec not in tasks:
                tasks[p.spec] = bar.add_task(p.spec, total=p.total, total_text="?", pages=0, wait="")
            wait = f"waiting {p.waiting_s:.0f} s: {p.why}" if p.waiting_s else ""
            bar.update(tasks[p.spec], completed=p.fetched, total=max(p.total or 0, p.fetched) or None,
                       total_text=f"{p.total:,}" if p.total else "?", pages=p.pages, wait=wait)

        yield show


def sync_summary(result: Any) -> dict:
    return {
        "source": result.spec, "import_id": result.import_id, "pages": result.pages, "requests": result.requests,
        "fetched": result.fetched, "new": result.new, "updated": result.updated, "unchanged": result.unchanged,
        "refused_opted_out": result.refused, "refused_generated": result.generated, "deleted": result.deleted, "unusable": result.unusable,
        "waited_s": round(result.waited_s, 1),
        "seconds": round(result.duration_s, 3), "notes": result.notes,
    }


def counted(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def print_sync(result: Any, *, as_json: bool) -> None:
    if as_json:
        print_json(sync_summary(result))
        return
    imported = f" (import #{result.import_id})" if result.import_id is not None else ""
    console.print(
        f"Synced [bold]{result.spec}[/]{imported}: {counted(result.fetched, 'post')} in {counted(result.pages, 'page')} "
        f"({counted(result.requests, 'request')}), [green]{result.new:,} new[/], {result.updated:,} updated, "
        f"{result.unchanged:,} unchanged in {result.duration_s:.1f} s"
        + (f", {result.waited_s:.0f} s waiting for rate limits" if result.waited_s else ""),
        highlight=False,
    )
    if result.deleted:
        console.print(f"{counted(result.deleted, 'post')} gone from the network: marked deleted, left out of new snapshots.")
    if result.refused:
        console.print(f"[yellow]{counted(result.refused, 'post')} of opted-out authors refused.[/]")
    if result.generated:
        console.print(f"[yellow]{counted(result.generated, 'post')} generated by tweetforge refused: never training data.[/]")
    if result.unusable:
        console.print(f"[yellow]{counted(result.unusable, 'post')} the server sent could not be stored and were left out:[/]")
    for note in result.notes:
        console.print(f"[yellow]{note}[/]", highlight=False)


@app.command("sources")
def sources_list(as_json: JsonOption = False) -> None:
    """Every followed account: network, cursor, last sync, posts and the last error."""
    from tweetforge.data.sync import followed

    rows = followed(engine())
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("No followed accounts yet: tweetforge ingest bsky:HANDLE (or mastodon:@user@instance, x:@user)")
        return
    table = Table(Column("source", no_wrap=True), "cursor", Column("last sync (UTC)", no_wrap=True), "syncs", "fetched", "stored",
                  "requests", "state")
    for r in rows:
        state = (f"[red]{r['last_error']}[/]" if r["last_error"] else "ok") + (" · part-way" if r["part_way"] else "")
        if r["locked_by"]:
            state += f" · syncing ({r['locked_by']})"
        cursor = r["cursor"] or "-"
        table.add_row(
            r["source"], cursor if len(cursor) <= 12 else "…" + cursor[-11:],
            r["last_sync_at"].strftime("%Y-%m-%d %H:%M") if r["last_sync_at"] else "never",
            str(r["syncs"]), f"{r['fetched']:,}", f"{r['stored']:,}", f"{r['requests']:,}", state,
        )
    console.print(table)


@app.command()
def sync(
    recheck_days: Annotated[float | None, typer.Option("--recheck-days", help="Also re-read the last N days: "
                                                      "edits replace texts, posts gone are marked deleted.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Fetch what is new for every followed account, once (what a scheduler calls); exit 1 if any failed."""
    from tweetforge.data.sync import followed, sync_followed

    store = engine()
    if not followed(store):
        raise TweetforgeError("no followed accounts: tweetforge ingest bsky:HANDLE (or mastodon:@user@instance, x:@user) first")
    with live_progress(disable=as_json) as show:
        outcomes = sync_followed(store, recheck_days=recheck_days, progress=show)
    failed = [o for o in outcomes if isinstance(o, TweetforgeError)]
    if as_json:
        print_json([{"error": str(o)} if isinstance(o, TweetforgeError) else sync_summary(o) for o in outcomes])
    else:
        for outcome in outcomes:
            if isinstance(outcome, TweetforgeError):
                errors.print(f"[bold red]Error:[/] {outcome}", highlight=False, soft_wrap=True)
            else:
                print_sync(outcome, as_json=False)
    if failed:
        raise typer.Exit(1)


@app.command("imports", hidden=True)
def ingest_list(as_json: JsonOption = False) -> None:
    """Every import run: source, format, file hash, counts and duration (`tweetforge ingest list`)."""
    from sqlalchemy import select

    from tweetforge.db.schema import imports as imports_table

    with engine().connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(imports_table).order_by(imports_table.c.id))]
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("No imports yet: tweetforge ingest example:trump")
        return
    table = Table("#", "when", Column("source", no_wrap=True), "format", "records", "new", "updated", "unchanged", "skipped",
                  "refused", "s")
    for r in rows:
        table.add_row(
            str(r["id"]), r["started_at"].strftime("%Y-%m-%d %H:%M"), r["source"], r["format"],
            f"{r['records']:,}", f"{r['new']:,}", f"{r['updated']:,}", f"{r['unchanged']:,}",
            f"{r['skipped']:,}", f"{r['refused']:,}", f"{r['duration_s']:.1f}",
        )
    console.print(table)


def stats_table(rows: list[dict], title: str) -> Table:
    from rich import box

    shown = [(k, label) for k, label in STATS_COLUMNS if k not in OPTIONAL_STATS or any(r[k] for r in rows)]
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("author", no_wrap=True, min_width=max((len(r["author"]) + 1 for r in rows), default=6))
    for _, label in shown:
        table.add_column(label, justify="right")
    table.add_column("period")
    for row in rows:
        period = f"{(row['first'] or '?')[:4]}–{(row['last'] or '?')[:4]}"
        table.add_row(f"@{row['author']}", *[f"{row[key]:,}" for key, _ in shown], period)
    return table


@app.command()
def stats(
    authors: AuthorsOption = None,
    drop_replies: DropReplies = False,
    keep_retweets: KeepRetweets = False,
    strip_reply_mentions: StripReplyMentions = False,
    mention_placeholder: MentionPlaceholder = None,
    keep_newlines: KeepNewlines = False,
    keep_duplicates: KeepDuplicates = False,
    min_words: MinWords = 3,
    languages: Languages = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also save posts per month and length histograms as PNG.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Per author: downloaded, retweets, replies, short, duplicates, kept — what cleaning would keep."""
    from tweetforge.data.clean import clean, cleaning_stats
    from tweetforge.data.generated import refused_by_author
    from tweetforge.data.store import read_posts

    rules = cleaning_rules(
        drop_replies=drop_replies, keep_retweets=keep_retweets, strip_reply_mentions=strip_reply_mentions,
        mention_placeholder=mention_placeholder, keep_newlines=keep_newlines, keep_duplicates=keep_duplicates, min_words=min_words,
        languages=languages,
    )
    with engine().connect() as conn:
        frame = read_posts(conn, authors or None)
        refused_generated = refused_by_author(conn)
    if frame.height == 0:
        who = " of " + ", ".join(authors) if authors else ""
        raise TweetforgeError(f"no stored posts{who}: import some first, e.g. tweetforge ingest example:trump")
    cleaned = clean(frame, rules)
    rows = cleaning_stats(cleaned, refused_generated)
    if plot is not None:
        from tweetforge.data.plots import plot_data_stats

        plot_data_stats(cleaned, plot)
    if as_json:
        print_json(rows)
        return
    console.print(stats_table(rows, f"What cleaning keeps (rules v{rules.describe()['version']})"))
    console.print("posts = RT + short + dupes + kept (+ replies dropped + other lang. when those rules are on); "
                  "'replies' counts every reply, kept or not.", style="dim")
    if plot is not None:
        console.print(f"Plot saved to {plot}")


@dataset_app.command("create")
def dataset_create(
    name: Annotated[str, typer.Argument(help="A new name, e.g. elon-v1 (snapshots are immutable).")],
    authors: AuthorsOption = None,
    since: Annotated[str | None, typer.Option("--since", help="Only posts from this day on (YYYY-MM-DD).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Only posts before this day (YYYY-MM-DD).")] = None,
    drop_replies: DropReplies = False,
    keep_retweets: KeepRetweets = False,
    strip_reply_mentions: StripReplyMentions = False,
    mention_placeholder: MentionPlaceholder = None,
    keep_newlines: KeepNewlines = False,
    keep_duplicates: KeepDuplicates = False,
    min_words: MinWords = 3,
    languages: Languages = None,
    split: Annotated[str, typer.Option("--split", help="train/validation/test percentages.")] = "90/5/5",
    balance: Annotated[bool, typer.Option("--balance", help="Oversample smaller authors to the largest one's characters.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N stored posts in time.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Freeze cleaned posts into an immutable Parquet snapshot with a hash-frozen split."""
    from tweetforge.config import get_settings
    from tweetforge.data.snapshots import SnapshotRequest, create_snapshot

    try:
        parts = [float(p) for p in split.split("/")]
        if len(parts) != 3:
            raise ValueError
    except ValueError:
        raise TweetforgeError(f"--split {split!r} must be three percentages like 90/5/5") from None
    request = SnapshotRequest(
        name=name,
        authors=tuple(authors or ()),
        since=parse_day(since, "--since"),
        until=parse_day(until, "--until"),
        rules=cleaning_rules(
            drop_replies=drop_replies, keep_retweets=keep_retweets, strip_reply_mentions=strip_reply_mentions,
            mention_placeholder=mention_placeholder, keep_newlines=keep_newlines, keep_duplicates=keep_duplicates, min_words=min_words,
            languages=languages,
        ),
        fractions=(parts[0] / 100, parts[1] / 100, parts[2] / 100),
        balance=balance,
        limit=limit,
    )
    with console.status(f"cleaning and freezing {name}…"):
        snapshot = create_snapshot(engine(), get_settings().datasets_location, request)
    for warning in snapshot.warnings:
        errors.print(f"[yellow]Warning:[/] {warning}", highlight=False)
    if as_json:
        print_json(snapshot.manifest())
        return
    show_snapshot(snapshot)


def show_snapshot(snapshot: Snapshot) -> None:
    splits = snapshot.counts["splits"]
    table = Table(title=f"dataset {snapshot.name}: {snapshot.posts:,} posts", title_justify="left")
    table.add_column("author")
    for s in ("train", "validation", "test"):
        table.add_column(s, justify="right")
    table.add_column("characters", justify="right")
    for author in snapshot.authors:
        table.add_row(
            f"@{author}",
            *[f"{splits[s].get(author, 0):,}" for s in ("train", "validation", "test")],
            f"{snapshot.counts['characters'].get(author, 0):,}",
        )
    console.print(table)
    if snapshot.counts.get("cleaning"):
        console.print(stats_table(snapshot.counts["cleaning"], "cleaning"))
    filters = snapshot.filters
    console.print(
        f"path {snapshot.path}\ncontent hash {snapshot.content_hash}\ncreated {snapshot.created_at:%Y-%m-%d %H:%M:%S}, "
        f"cleaning rules v{snapshot.rules_version}, split {'/'.join(f'{f * 100:g}' for f in filters['fractions'])}"
        + (f", oversampled copies {snapshot.counts['oversampled']:,}" if filters.get("balance") else ""),
        highlight=False,
    )


@dataset_app.command("list")
def dataset_list(as_json: JsonOption = False) -> None:
    """Every snapshot, oldest first."""
    from tweetforge.data.snapshots import list_snapshots

    snapshots = list_snapshots(engine())
    if as_json:
        print_json([s.manifest() for s in snapshots])
        return
    if not snapshots:
        console.print("No datasets yet: tweetforge dataset create NAME --author HANDLE")
        return
    table = Table("name", "created", "authors", "posts", "train", "validation", "test", "rules", "hash")
    for s in snapshots:
        splits = s.counts["splits"]
        table.add_row(
            s.name, f"{s.created_at:%Y-%m-%d %H:%M}", ", ".join(f"@{a}" for a in s.authors), f"{s.posts:,}",
            *[f"{sum(splits[k].values()):,}" for k in ("train", "validation", "test")],
            f"v{s.rules_version}", s.content_hash[:12],
        )
    console.print(table)


@dataset_app.command("show")
def dataset_show(name: str, as_json: JsonOption = False) -> None:
    """A snapshot's manifest: authors, filters, rules, counts per split and author, hash."""
    from tweetforge.data.snapshots import get_snapshot

    snapshot = get_snapshot(engine(), name)
    if as_json:
        print_json(snapshot.manifest())
        return
    show_snapshot(snapshot)


@optout_app.command("add")
def optout_add(
    handle: str,
    reason: Annotated[str | None, typer.Option("--reason")] = None,
    purge: Annotated[bool, typer.Option("--purge", help="Also delete their stored posts and history.")] = False,
) -> None:
    """Refuse this author's posts at import and exclude them from snapshots."""
    from tweetforge.data.optout import add_optout

    deleted = add_optout(engine(), handle, reason, purge)
    console.print(f"@{handle.lstrip('@')} opted out" + (f"; {deleted:,} stored posts deleted" if purge else ""))


@optout_app.command("remove")
def optout_remove(handle: str) -> None:
    """Allow this author again."""
    from tweetforge.data.optout import remove_optout

    if not remove_optout(engine(), handle):
        raise TweetforgeError(f"@{handle.lstrip('@')} is not opted out")
    console.print(f"@{handle.lstrip('@')} may be imported again")


@optout_app.command("list")
def optout_list(as_json: JsonOption = False) -> None:
    """Every opted-out handle."""
    from tweetforge.data.optout import list_optouts

    rows = list_optouts(engine())
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("Nobody has opted out.")
        return
    table = Table("handle", "since", "reason")
    for r in rows:
        table.add_row(f"@{r['handle']}", r["added_at"][:10], r["reason"] or "")
    console.print(table)


models_app = typer.Typer(help="Registered model versions and their aliases.", no_args_is_help=True)
app.add_typer(models_app, name="models")


TRAINING = TrainConfig(dataset="")
"""The training defaults the options show."""


@app.command()
def train(
    dataset: Annotated[str, typer.Argument(help="A dataset snapshot (tweetforge dataset list).")],
    base: Annotated[str, typer.Option("--base", help="Hub id or local HF directory, or 'lstm' or 'scratch'.")] = TRAINING.base,
    name: Annotated[str | None, typer.Option("--name", help="Registry name (default: dataset name without -vN).")] = None,
    from_model: Annotated[str | None, typer.Option("--from", help="Continue a registered model, e.g. elon:3.")] = None,
    full: Annotated[bool, typer.Option("--full", help="Full fine-tune instead of LoRA.")] = False,
    lora_r: Annotated[int, typer.Option("--lora-r")] = TRAINING.lora_r,
    train_layers: Annotated[int, typer.Option("--train-layers", help="LoRA on the top N layers, bottom cached; 0: all.")] = TRAINING.train_layers,
    lora_modules: Annotated[str, typer.Option("--lora-modules", help="attention or attention+mlp.")] = TRAINING.lora_modules,
    layers: Annotated[int, typer.Option("--layers", help="scratch / lstm: layers.")] = TRAINING.layers,
    width: Annotated[int, typer.Option("--width", help="scratch / lstm: width.")] = TRAINING.width,
    epochs: Annotated[float, typer.Option("--epochs", "--num-train-epochs")] = TRAINING.epochs,
    max_steps: Annotated[int | None, typer.Option("--max-steps", "--max-train-steps")] = None,
    max_minutes: Annotated[float | None, typer.Option("--max-minutes", help="Training time budget; the learning rate decays to fit it.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "--per-device-train-batch-size")] = TRAINING.batch_size,
    block_size: Annotated[int, typer.Option("--block-size", help="Tokens per packed block.")] = TRAINING.block_size,
    learning_rate: Annotated[float | None, typer.Option("--learning-rate", "--lr", help="Peak learning rate (default by method).")] = None,
    warmup_ratio: Annotated[float, typer.Option("--warmup-ratio", help="Share of steps warming the learning rate up.")] = TRAINING.warmup_ratio,
    min_lr_ratio: Annotated[float, typer.Option("--min-lr-ratio", help="Cosine decay ends at this share of the peak.")] = TRAINING.min_lr_ratio,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay.")] = TRAINING.weight_decay,
    max_grad_norm: Annotated[float, typer.Option("--max-grad-norm", help="Clip gradients to this global norm.")] = TRAINING.max_grad_norm,
    eval_every: Annotated[int, typer.Option("--eval-every", help="Steps between validation evaluations.")] = TRAINING.eval_every,
    patience: Annotated[int, typer.Option("--patience", help="Evaluations without improvement before stopping.")] = TRAINING.patience,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every")] = TRAINING.checkpoint_every,
    seed: Annotated[int, typer.Option("--seed")] = TRAINING.seed,
    precision: Annotated[str, typer.Option("--precision", help="auto, bf16 or fp32.")] = TRAINING.precision,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model (slower start, faster steps).")] = False,
    threads: Annotated[int | None, typer.Option("--threads")] = None,
    device: Annotated[str, typer.Option("--device", help="auto (the GPU when torch sees one), cpu or cuda.")] = "auto",
    nproc: Annotated[int, typer.Option("--nproc", help="Training processes on this host: DDP through torchrun (gloo on CPUs, NCCL on GPUs).",
                                       min=1)] = 1,
    report_to: Annotated[str, typer.Option("--report-to", help="trackio, wandb or none.")] = "trackio",
    resume: Annotated[bool, typer.Option("--resume", help="Continue the last interrupted run of this model.")] = False,
    resume_from: Annotated[Path | None, typer.Option("--resume-from-checkpoint", help="Continue the run in this directory.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Train a model on a dataset snapshot and register it as the next version of its name."""
    import os
    import sys
    import time

    from tweetforge.config import get_settings
    from tweetforge.data.snapshots import get_snapshot
    from tweetforge.registry.versions import list_versions, register, resolve
    from tweetforge.training.distributed import World, launch
    from tweetforge.training.train import TrainConfig, find_resumable_run, saved_config
    from tweetforge.training.train import train as run_training

    if nproc > 1 and "RANK" not in os.environ:  # each rank runs this same command line; under torchrun, torchrun decides
        launch(nproc, sys.argv[1:])
        return
    world = World.from_environment()

    quiet_libraries()
    settings = get_settings()
    home = settings.resolved_home
    config = TrainConfig(
        dataset=dataset, name=name, base=base, from_model=from_model, full=full, lora_r=lora_r, lora_alpha=2 * lora_r, train_layers=train_layers,
        lora_modules=lora_modules,
        layers=layers, width=width, epochs=epochs, max_steps=max_steps, max_minutes=max_minutes, batch_size=batch_size,
        block_size=block_size, learning_rate=learning_rate, warmup_ratio=warmup_ratio, min_lr_ratio=min_lr_ratio,
        weight_decay=weight_decay, max_grad_norm=max_grad_norm, eval_every=eval_every, patience=patience,
        checkpoint_every=checkpoint_every, seed=seed, precision=precision, compile=compile, threads=threads, device=device, report_to=report_to,
    )
    started = time.perf_counter()
    registered = {v.run_id for v in list_versions(engine(), config.model_name)} if resume and not resume_from else set()
    run_dir = resume_from or (find_resumable_run(home, config.model_name, registered) if resume else None)
    if run_dir is not None:
        config = saved_config(run_dir)
        if world.main:
            errors.print(f"Resuming run {run_dir.name}", highlight=False)
    snapshot = get_snapshot(engine(), config.dataset)
    with training_progress(disable=as_json or not world.main) as on_progress:
        result = run_training(
            config, snapshot, home, run_dir=run_dir, resume=run_dir is not None, progress=on_progress,
            resolve_from=lambda ref: resolve(engine(), ref).path,
        )
    if not world.main:  # rank 0 registers the run
        return
    trained = time.perf_counter()
    version = register(engine(), settings.models_location, result, snapshot)
    spent = result.seconds | {"export": time.perf_counter() - trained, "total": time.perf_counter() - started}
    summary = {**version.summary(), "seconds": {k: round(v, 1) for k, v in spent.items()}}
    if as_json:
        print_json(summary)
        return
    m = version.metrics
    console.print(
        f"Registered [bold]{version.ref}[/] ({version.kind}) in {version.path}\n"
        f"{m['stopped_because']}; {m['steps']:,} steps, {m['train_tokens']:,} tokens at {m['tokens_per_second'] or 0:,.0f} tokens/s; "
        f"best validation loss {m['val_loss'] or float('nan'):.3f} (perplexity {m['val_perplexity'] or float('nan'):.1f}) at step {m['best_step']}\n"
        "time: " + ", ".join(f"{k} {v:.0f} s" for k, v in spent.items() if k != "conversion" or v >= 0.5),
        highlight=False,
    )


class training_progress:
    """A Rich bar fed by the training loop: step, loss, validation loss, tokens/s, ETA."""

    def __init__(self, disable: bool):
        self.progress = Progress(
            TextColumn("[bold]train[/]"), BarColumn(), TextColumn("step {task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]}"), TextColumn("val {task.fields[val]}"), TextColumn("{task.fields[tps]} tok/s"),
            TextColumn("ETA"), __import__("rich.progress", fromlist=["TimeRemainingColumn"]).TimeRemainingColumn(),
            console=errors, disable=disable,
        )
        self.task = None

    def __enter__(self):  # type: ignore[no-untyped-def]
        self.progress.__enter__()
        return self.update

    def __exit__(self, *exc):  # type: ignore[no-untyped-def]
        return self.progress.__exit__(*exc)

    def update(self, event: dict) -> None:
        if event["phase"] == "start":
            errors.print(f"Training on {event['description']}", highlight=False)
            self.task = self.progress.add_task("train", total=event["total_steps"], completed=event["step"], loss="…", val="…", tps="…")
        elif event["phase"] == "step" and self.task is not None:
            fields = {"loss": f"{event['loss']:.3f}", "tps": f"{event['tokens_per_second']:,.0f}"}
            if event.get("val_loss") is not None:
                fields["val"] = f"{event['val_loss']:.3f}"
            self.progress.update(self.task, completed=event["step"], **fields)
        elif event["phase"] == "done":
            errors.print(event["stopped_because"], highlight=False)


@models_app.command("list")
def models_list(name: Annotated[str | None, typer.Argument()] = None, as_json: JsonOption = False) -> None:
    """Every registered version, with aliases and validation metrics."""
    from tweetforge.registry.versions import list_versions

    versions = list_versions(engine(), name)
    if as_json:
        print_json([v.summary() for v in versions])
        return
    if not versions:
        console.print("No models yet: tweetforge train DATASET")
        return
    table = Table("model", "kind", "aliases", "dataset", "val loss", "val ppl", "test bits/char", "copies", "steps", "created")
    for v in versions:
        loss, ppl = v.metrics.get("val_loss"), v.metrics.get("val_perplexity")
        test = v.metrics.get("test", {}).get(v.dataset, {})
        table.add_row(v.ref, v.kind, ", ".join(v.aliases), v.dataset, f"{loss:.3f}" if loss else "—", f"{ppl:.1f}" if ppl else "—",
                      f"{test['bits_per_char']:.4f}" if test else "—", f"{test['copy_rate']:.1%}" if test else "—",
                      f"{v.metrics['steps']:,}", f"{v.created_at:%Y-%m-%d %H:%M}")
    console.print(table)


@models_app.command("show")
def models_show(ref: str, as_json: JsonOption = False) -> None:
    """One version (NAME for its champion or latest, NAME:VERSION, NAME:ALIAS)."""
    from tweetforge.registry.versions import resolve

    version = resolve(engine(), ref)
    if as_json:
        print_json(version.summary())
        return
    s = version.summary()
    for key in ("ref", "kind", "aliases", "path", "base", "dataset", "dataset_hash", "run_id", "created_at"):
        console.print(f"[bold]{key}[/]: {s[key]}", highlight=False)
    console.print("[bold]metrics[/]: " + ", ".join(f"{k}={v}" for k, v in s["metrics"].items() if k != "test"), highlight=False)
    for dataset, test in s["metrics"].get("test", {}).items():
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in test.items() if v is not None)
        console.print(f"[bold]test split of {dataset}[/]: {shown}", highlight=False)
    console.print("[bold]params[/]: " + ", ".join(f"{k}={v}" for k, v in s["params"].items() if v is not None), highlight=False)


@models_app.command("pull")
def models_pull(ref: str) -> None:
    """Make a version a directory on this machine (downloaded from TWEETFORGE_ARTIFACTS into the cache once,
    checked against its sha256s) and print that directory, for transformers.pipeline or vLLM."""
    from tweetforge.registry.versions import resolve

    print(resolve(engine(), ref).path)


@models_app.command("alias")
def models_alias(ref: str, alias: str) -> None:
    """Point an alias (champion, challenger, anything) at a version."""
    from tweetforge.registry.versions import set_alias

    version = set_alias(engine(), ref, alias)
    console.print(f"{version.name}:{alias} → {version.ref}")


@app.command()
def generate(
    model: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME:ALIAS.")],
    prompt: Annotated[str, typer.Option("--prompt", "-p")] = "",
    n: Annotated[int, typer.Option("-n", help="How many posts.")] = 1,
    author: Annotated[str | None, typer.Option("--author", help="Multi-author models: write as this author.")] = None,
    temperature: Annotated[float, typer.Option("--temperature")] = 1.0,
    top_p: Annotated[float, typer.Option("--top-p")] = 0.95,
    top_k: Annotated[int, typer.Option("--top-k", help="0: off.")] = 0,
    repetition_penalty: Annotated[float, typer.Option("--repetition-penalty")] = 1.0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    one_line: Annotated[bool, typer.Option("--one-line", help="Stop at the first newline too.")] = False,
    allow_copies: Annotated[bool, typer.Option("--allow-copies", help="Turn off the copy filter (which re-draws copies of training posts).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Write posts like the author. Every one is labelled as generated."""
    from tweetforge.generation.generate import Sampling, generate_posts
    from tweetforge.registry.versions import ensure_copy_index, resolve

    quiet_libraries()
    version = resolve(engine(), model)
    if not allow_copies:
        ensure_copy_index(engine(), version)
    sampling = Sampling(temperature, top_p, top_k, repetition_penalty, one_line)
    generation = generate_posts(version, prompt, n, author=author, sampling=sampling, seed=seed, copy_filter=not allow_copies)
    from tweetforge.experiments.ab import log_generation

    # into the generation log, as served posts go: a post made here and published somewhere is refused at import
    log_generation(engine(), version.name, version.version, prompt=prompt, user_id="cli",
                   params={"n": n, "author": author, "temperature": temperature, "top_p": top_p, "seed": seed, "source": "cli"},
                   posts=[{"text": p.text, "generated": True} for p in generation.posts])
    if as_json:
        print_json({"model": version.ref, **generation.to_dict()})
        return
    for post in generation.posts:
        who = f"@{post.author}" if post.author else ""
        console.print(f"[dim]{version.ref} · seed {post.seed} · {len(post.text)} chars · [bold]generated[/] {who}[/]")
        console.print(post.text, highlight=False, markup=False)
        console.print()
    if generation.copy_filter:
        errors.print(f"copy filter: {generation.filtered_copies} draw(s) copied a training post and were re-drawn; "
                     f"{generation.dropped} post(s) dropped", highlight=False)


# ---------------------------------------------------------------- evaluation

Samples = Annotated[int, typer.Option("--samples", "-n", help="Generated posts per model.")]
EvalSeed = Annotated[int, typer.Option("--seed", help="Sampling seed, the same for every model.")]
MaxTestPosts = Annotated[int, typer.Option("--max-test-posts", help="Test posts scored for bits per character.")]
ReportTo = Annotated[str, typer.Option("--report-to", help="trackio, wandb or none.")]

def evaluation_table(evaluations: list[Evaluation]) -> Table:
    """Metrics as rows, one column per model; token perplexity only where the tokenizer is the first model's."""
    from tweetforge.evaluation.report import METRICS, TABLE_METRICS, cell

    first = evaluations[0].metrics
    table = Table("", *[e.subject for e in evaluations], title=f"test split of {evaluations[0].dataset}")
    for key in TABLE_METRICS:
        if key == "attribution_accuracy" and not any(key in e.metrics for e in evaluations):
            continue
        title = METRICS[key].title + (f" (real {first['real_mean_chars']:.0f})" if key == "mean_chars" else "")
        table.add_row(title, *[cell(key, e.metrics, first) for e in evaluations])
    table.add_row("seconds", *[f"{e.seconds:.0f}" for e in evaluations])
    return table


def print_copies(evaluation: Evaluation, limit: int = 3) -> None:
    for copy in evaluation.copies[:limit]:
        console.print(f"[dim]{evaluation.subject} copied ({copy['kind']}, {copy['words_in_a_row']} words in a row):[/]", highlight=False)
        console.print(f"  generated: {copy['generated']}", highlight=False, markup=False)
        console.print(f"  training:  {copy['training_post']}", highlight=False, markup=False)


class evaluation_progress:
    """A Rich bar per model and phase (scoring test posts, generating posts)."""

    def __init__(self, disable: bool):
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                 TimeElapsedColumn(), console=errors, disable=disable)
        self.tasks: dict[tuple[str, str], Any] = {}

    def __enter__(self):  # type: ignore[no-untyped-def]
        self.progress.__enter__()
        return self.update

    def __exit__(self, *exc):  # type: ignore[no-untyped-def]
        return self.progress.__exit__(*exc)

    def update(self, subject: str, what: str, done: int, total: int) -> None:
        key = (subject, what)
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(f"{subject}: {what}", total=total)
        self.progress.update(self.tasks[key], completed=done, total=total)


def _run_evaluations(refs: list[str], dataset: str | None, settings: EvalSettings, *, fresh: tuple[str, ...], report_to: str,
                     quiet: bool) -> Comparison:
    from tweetforge.config import get_settings
    from tweetforge.evaluation.evaluate import run_evaluations

    quiet_libraries()
    with evaluation_progress(disable=quiet) as on_progress:
        return run_evaluations(engine(), get_settings().resolved_home, refs, dataset, settings, fresh=fresh,
                               report_to=report_to, progress=on_progress)


@app.command()
def evaluate(
    model: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME:ALIAS.")],
    dataset: Annotated[str | None, typer.Option("--dataset", help="Evaluate on this snapshot's test split (default: the model's own).")] = None,
    baselines: Annotated[bool, typer.Option("--baselines/--no-baselines", help="Also the Markov chain and the untuned base.")] = True,
    samples: Samples = 200,
    seed: EvalSeed = 1234,
    max_test_posts: MaxTestPosts = 2000,
    report_to: ReportTo = "trackio",
    as_json: JsonOption = False,
) -> None:
    """Measure a model on a frozen test split: bits per char, diversity, length, memorization, detectability."""
    from tweetforge.evaluation.evaluate import EvalSettings, untuned_base_of
    from tweetforge.registry.versions import resolve

    settings = EvalSettings(samples=samples, seed=seed, max_test_posts=max_test_posts)
    version = resolve(engine(), model)
    refs = [model]
    if baselines:
        refs += ["markov"] + (["base"] if untuned_base_of(engine(), version) else [])
    comparison = _run_evaluations(refs, dataset, settings, fresh=(model,), report_to=report_to, quiet=as_json)
    if as_json:
        print_json([e.summary() for e in comparison.evaluations])
        return
    console.print(evaluation_table(comparison.evaluations))
    print_copies(comparison.evaluations[0])
    console.print(f"Results are on {version.ref}'s registry row (tweetforge models show {version.ref}) and in its card {version.path / 'README.md'}",
                  highlight=False)


@app.command()
def compare(
    models: Annotated[list[str], typer.Argument(help="Registered models, and the baselines 'markov' and 'base' (or base:<hub id or dir>).")],
    dataset: Annotated[str | None, typer.Option("--dataset", help="Test split to compare on (default: the first model's dataset).")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write bars per metric and length histograms to this PNG.")] = None,
    samples: Samples = 200,
    seed: EvalSeed = 1234,
    max_test_posts: MaxTestPosts = 2000,
    report_to: ReportTo = "trackio",
    as_json: JsonOption = False,
) -> None:
    """Several models side by side on one test split (stored evaluations with the same settings are reused)."""
    from tweetforge.evaluation.evaluate import EvalSettings
    from tweetforge.evaluation.plots import plot_comparison

    settings = EvalSettings(samples=samples, seed=seed, max_test_posts=max_test_posts)
    comparison = _run_evaluations(models, dataset, settings, fresh=(), report_to=report_to, quiet=as_json)
    if plot:
        plot_comparison(comparison.evaluations, comparison.real_texts(), plot)
    if as_json:
        print_json([e.summary() for e in comparison.evaluations])
        return
    console.print(evaluation_table(comparison.evaluations))
    if plot:
        console.print(f"Plot: {plot}", highlight=False)


@app.command()
def promote(
    model: Annotated[str, typer.Argument(help="The candidate, e.g. elon:4.")],
    alias: Annotated[str, typer.Option("--alias", help="The alias to move.")] = "champion",
    margin: Annotated[float, typer.Option("--margin", help="Refuse if bits per char are worse than the champion's by more than this.")] = 0.01,
    max_copy_rate: Annotated[float, typer.Option("--max-copy-rate", help="Refuse if more generated posts than this copy training posts.")] = 0.01,
    force: Annotated[bool, typer.Option("--force", help="Promote even if the gate refuses (logged as forced).")] = False,
    report_to: ReportTo = "trackio",
    as_json: JsonOption = False,
) -> None:
    """Make a version its name's champion if it is no worse than the current one on the same test split."""
    from tweetforge.config import get_settings
    from tweetforge.evaluation.promotion import promote as run_promotion

    quiet_libraries()
    with evaluation_progress(disable=as_json) as on_progress:
        decision = run_promotion(engine(), get_settings().resolved_home, model, alias=alias, margin=margin, max_copy_rate=max_copy_rate, force=force,
                                 report_to=report_to, progress=on_progress)
    summary = {"candidate": decision.candidate.ref, "champion": decision.champion.ref if decision.champion else None, "alias": alias,
               "promoted": decision.promoted, "forced": decision.forced, "reasons": decision.reasons, "dataset": decision.dataset,
               "candidate_bits_per_char": decision.candidate_metrics["bits_per_char"], "candidate_copy_rate": decision.candidate_metrics["copy_rate"],
               "champion_bits_per_char": decision.champion_metrics["bits_per_char"] if decision.champion_metrics else None}
    if as_json:
        print_json(summary)
    else:
        against = (f"champion {decision.champion.ref}: {decision.champion_metrics['bits_per_char']:.4f} bits/char"
                   if decision.champion else "no champion yet")
        console.print(f"{decision.candidate.ref}: {decision.candidate_metrics['bits_per_char']:.4f} bits/char, copy rate "
                      f"{decision.candidate_metrics['copy_rate']:.1%} on the test split of {decision.dataset}; {against}", highlight=False)
        if decision.promoted:
            forced = " (forced past: " + "; ".join(decision.reasons) + ")" if decision.forced else ""
            console.print(f"{decision.candidate.name}:{alias} → {decision.candidate.ref}{forced}", highlight=False)
    if not decision.promoted:
        raise TweetforgeError(f"promotion of {decision.candidate.ref} refused: " + "; ".join(decision.reasons) + " (--force to override; logged)")


@app.command("promotions", hidden=True)
@models_app.command("promotions")
def models_promotions(name: Annotated[str | None, typer.Argument(help="Only this model name.")] = None, as_json: JsonOption = False) -> None:
    """Every promotion decision: who, when, from which version to which, the numbers, forced or refused."""
    from tweetforge.evaluation.promotion import promotion_log

    log = promotion_log(engine(), name)
    if as_json:
        print_json(log)
        return
    if not log:
        console.print("No promotions yet: tweetforge promote NAME:VERSION")
        return
    table = Table("when", "who", "model", "from", "to", "decision", "bits/char", "champion bits/char", "copy rate", "reason")
    for row in log:
        decision = ("forced" if row["forced"] else "promoted") if row["promoted"] else "refused"
        champion = row["champion"] or {}
        table.add_row(f"{row['at']:%Y-%m-%d %H:%M}", row["who"], f"{row['name']}:{row['alias']}", str(row["from_version"] or "—"),
                      str(row["to_version"]), decision, f"{row['candidate']['bits_per_char']:.4f}",
                      f"{champion['bits_per_char']:.4f}" if champion else "—", f"{row['candidate']['copy_rate']:.1%}", row["reason"])
    console.print(table)


# ---------------------------------------------------------------- A/B experiments

ab_app = typer.Typer(help="A/B experiments between model versions: create, status, stop, promote.", no_args_is_help=True)
app.add_typer(ab_app, name="ab")


@ab_app.command("create")
def ab_create(
    name: str,
    variant: Annotated[list[str], typer.Option("--variant", help="NAME=MODEL:WEIGHT, e.g. gpt=elon:4:50 (two or more).")],
    metric: Annotated[str, typer.Option("--metric", help="like, share, or arena (pairwise choice).")] = "like",
    min_sample: Annotated[int, typer.Option("--min-sample", help="Exposures per variant before a winner can be declared.")] = 1000,
    alpha: Annotated[float, typer.Option("--alpha", help="False-positive rate of the sequential test.")] = 0.05,
    auto_promote: Annotated[bool, typer.Option("--auto-promote", help="Make the winner its name's champion when the test is conclusive.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Start an experiment; requests for its name are split between the variants by user."""
    from tweetforge.experiments.ab import (
        create_experiment,
        parse_variant,
    )

    experiment = create_experiment(engine(), name, [parse_variant(v) for v in variant], metric=metric, min_sample=min_sample, alpha=alpha,
                                   auto_promote=auto_promote)
    if as_json:
        print_json(experiment.summary())
        return
    shares = ", ".join(f"{v.name} = {v.model_ref} ({v.weight:g})" for v in experiment.variants)
    console.print(f"Experiment {experiment.name} running: {shares}; metric {experiment.metric}", highlight=False)


@ab_app.command("list")
def ab_list(as_json: JsonOption = False) -> None:
    """Every experiment and its state."""
    from tweetforge.experiments.ab import list_experiments

    found = list_experiments(engine())
    if as_json:
        print_json([e.summary() for e in found])
        return
    if not found:
        console.print("No experiments yet: tweetforge ab create NAME --variant a=MODEL:50 --variant b=MODEL:50")
        return
    table = Table("experiment", "status", "metric", "variants", "winner", "created")
    for e in found:
        table.add_row(e.name, e.status, e.metric, ", ".join(f"{v.name}={v.model_ref}:{v.weight:g}" for v in e.variants),
                      e.winner or "—", f"{e.created_at:%Y-%m-%d %H:%M}")
    console.print(table)


@ab_app.command("status")
def ab_status(
    name: str,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write rates with intervals over time and the p-value to this PNG.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Exposures, conversions, rates with 95% intervals, P(best) and the sequential test's decision (acted on
    when the experiment auto-promotes)."""
    from tweetforge.experiments.ab import (
        apply_decision,
        experiment_status,
    )
    from tweetforge.experiments.plots import plot_experiment

    status = experiment_status(engine(), name)
    promoted = apply_decision(engine(), status)
    if plot:
        plot_experiment(status, plot)
    if as_json:
        print_json({**status.summary(), "promoted_now": promoted})
        return
    experiment = status.experiment
    unit, success = ("comparisons", "wins") if experiment.metric == "arena" else ("exposures", f"{experiment.metric}s")
    table = Table("variant", "model", unit, success, "rate", "95% interval", "P(best)",
                  title=f"{experiment.name} ({experiment.status}, metric {experiment.metric})")
    for r in status.results:
        rate = "—" if r.exposures == 0 else f"{r.rate:.2%}"
        table.add_row(r.variant, r.model, f"{r.exposures:,}", f"{r.conversions:,}", rate, f"{r.low:.2%} – {r.high:.2%}", f"{r.p_best:.3f}")
    console.print(table)
    if status.ties:
        console.print(f"{status.ties} comparisons judged both bad", highlight=False)
    console.print(f"decision: {status.state}" + (f", winner {status.winner}" if status.winner else "") + f" — {status.reason}", highlight=False)
    if promoted:
        winner = experiment.variant(status.winner)
        console.print(f"auto-promoted: {winner.model_name}:champion → {winner.model_ref}", highlight=False)
    if plot:
        console.print(f"Plot: {plot}", highlight=False)


@ab_app.command("promote")
def ab_promote(
    name: str,
    variant: Annotated[str | None, typer.Option("--variant", help="Promote this variant even without a conclusive result.")] = None,
) -> None:
    """Make the winning variant's model version its name's champion and end the experiment (logged)."""
    from tweetforge.experiments.ab import promote_variant

    target = promote_variant(engine(), name, variant)
    console.print(f"{target.model_name}:champion → {target.model_ref} (variant {target.name} of {name})", highlight=False)


@ab_app.command("stop")
def ab_stop(name: str) -> None:
    """Stop an experiment: its name no longer splits traffic."""
    from tweetforge.experiments.ab import stop_experiment

    experiment = stop_experiment(engine(), name)
    console.print(f"Experiment {experiment.name} stopped", highlight=False)


@app.command()
def bot(
    sources: Annotated[list[str], typer.Argument(help="bsky:HANDLE, mastodon:@user@instance, x:@user, a file or example:trump; "
                                                     "several make a multi-author model.")],
    minutes: Annotated[float, typer.Option("--minutes", help="Training budget, a cap (the default one epoch often ends sooner).")] = 8.0,
    name: Annotated[str | None, typer.Option("--name", help="Registry name (default: from the handles).")] = None,
    base: Annotated[str | None, typer.Option("--base", help="Base model (default: the train command's).")] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="Live sources: another AppView, instance address or X proxy.")] = None,
    samples: Annotated[int, typer.Option("--samples", help="Generated posts per model for the evaluation.")] = 100,
    report_to: ReportTo = "trackio",
    as_json: JsonOption = False,
) -> None:
    """From a handle to a served model in one command: import, cleaning table, snapshot, training,
    evaluation against the Markov chain and the base, model card, and five generated posts."""
    from tweetforge.config import get_settings
    from tweetforge.pipeline.bot import run_bot

    quiet_libraries()
    home = get_settings().resolved_home

    def on_stage(stage: str, run: Any) -> None:
        if as_json:
            return
        took = f"[dim]({run.seconds[stage]:.0f} s)[/]"
        if stage == "import":
            for imported in run.imports:
                console.print(f"[bold]import[/] {imported['source']}: {imported['fetched']:,} posts read, {imported['new']:,} new {took}",
                              highlight=False)
        elif stage == "stats":
            console.print(stats_table(run.stats, "What cleaning keeps"))
        elif stage == "snapshot":
            console.print(f"[bold]snapshot[/] {run.dataset} {took}", highlight=False)
        elif stage == "train":
            m = run.version.metrics
            console.print(f"[bold]train[/] registered {run.version.ref}: {m['stopped_because']}; best validation loss "
                          f"{m['val_loss'] or float('nan'):.3f} {took}", highlight=False)
        elif stage == "evaluate":
            console.print(evaluation_table(run.comparison.evaluations))
        elif stage == "promote" and run.promotion is not None:
            decision = run.promotion
            console.print(f"[bold]promote[/] {run.version.ref} " + ("is the champion" if decision.promoted else
                          "stays a candidate: " + "; ".join(decision.reasons)), highlight=False)
        elif stage == "generate":
            console.print(f"[bold]five generated posts[/] {took}", highlight=False)
            for post in run.generation.posts:
                console.print(f"[dim]{run.version.ref} · [bold]generated[/][/]", highlight=False)
                console.print(post.text, highlight=False, markup=False)

    with live_progress(disable=as_json) as on_sync, training_progress(disable=as_json) as on_train, \
            evaluation_progress(disable=as_json) as on_eval:
        run = run_bot(engine(), home, sources, name=name, minutes=minutes, base=base, base_url=base_url, samples=samples,
                      report_to=report_to, on_stage=on_stage, sync_progress=on_sync, train_progress=on_train, eval_progress=on_eval)
    where = {"model": run.version.ref, "champion": "champion" in run.version.aliases, "card": str(run.version.path / "README.md"),
             "ui": "tweetforge serve, then http://127.0.0.1:8000/", "api": "http://127.0.0.1:8000/v1/generate"}
    if as_json:
        print_json({"name": run.name, "authors": run.authors, "imports": run.imports, "dataset": run.dataset, **where,
                    "evaluation": [e.summary() for e in run.comparison.evaluations],
                    "posts": [{"text": p.text, "generated": True} for p in run.generation.posts], "seconds": run.seconds})
        return
    console.print(f"Model card: {where['card']}\nWeb UI and API: {where['ui']} (API: POST {where['api']} "
                  f"with {{\"model\": \"{run.version.name}\"}})", highlight=False)


pipeline_app = typer.Typer(help="The pipeline's history: every watch cycle and its steps.", no_args_is_help=True)
app.add_typer(pipeline_app, name="pipeline")


def print_step(row: dict) -> None:
    from tweetforge.pipeline.watch import describe_numbers

    numbers = describe_numbers(row["numbers"])
    took = (row["finished_at"] - row["started_at"]).total_seconds() if row["finished_at"] else 0
    color = {"ok": "green", "promoted": "green", "experiment": "cyan", "skipped": "dim", "refused": "yellow"}.get(row["outcome"], "red")
    model = f" {row['model_name']}" if row["model_name"] else ""
    console.print(f"[bold]{row['step']}[/]{model}: [{color}]{row['outcome']}[/] {numbers} [dim]({took:.0f} s)[/]"
                  + (f"\n  {row['error']}" if row["error"] else ""), highlight=False)


@app.command()
def watch(
    every: Annotated[str, typer.Option("--every", help="Time between cycles: 15m, 1h, 90s.")] = "15m",
    once: Annotated[bool, typer.Option("--once", help="One cycle, then exit (for cron, systemd timers, a Kubernetes CronJob).")] = False,
    retrain_after: Annotated[int, typer.Option("--retrain-after", help="New kept posts since the champion's dataset that start a retraining.")] = 200,
    train_minutes: Annotated[float, typer.Option("--train-minutes", help="Training budget of a challenger.")] = 4.0,
    inbox: Annotated[Path | None, typer.Option("--inbox", help="Also import new files dropped into this folder.")] = None,
    ab: Annotated[bool, typer.Option("--ab", help="A gated challenger first goes into an A/B test against the champion (auto-promote).")] = False,
    min_sample: Annotated[int, typer.Option("--min-sample", help="--ab: feedback events per variant before the test decides.")] = 500,
    margin: Annotated[float | None, typer.Option("--margin", help="Promotion gate: how much worse bits per char may be (0.01 = 1%).")] = None,
    samples: Annotated[int, typer.Option("--samples", help="Generated posts per model for the gate's evaluation.")] = 100,
    report_to: ReportTo = "trackio",
) -> None:
    """Keep models fresh: sync followed accounts, retrain a challenger on new posts, gate it, roll it out;
    every cycle in `tweetforge pipeline runs`. Stops cleanly on SIGTERM or Ctrl-C at a step boundary."""
    import signal

    from tweetforge.config import get_settings
    from tweetforge.pipeline.watch import WatchSettings, parse_every, run_cycle
    from tweetforge.pipeline.watch import watch as run_watch

    quiet_libraries()
    seconds = parse_every(every)
    if inbox is not None and not inbox.is_dir():
        raise TweetforgeError(f"--inbox {inbox}: not a folder")
    settings = WatchSettings(retrain_after=retrain_after, train_minutes=train_minutes, inbox=inbox, ab=ab, min_sample=min_sample,
                             margin=margin, samples=samples, report_to=report_to)
    home = get_settings().resolved_home
    stop = {"asked": False}

    def ask_to_stop(signum: int, frame: Any) -> None:
        if stop["asked"]:
            raise KeyboardInterrupt
        stop["asked"] = True
        errors.print("Stopping at the next step boundary (again to stop now).")

    previous = {sig: signal.signal(sig, ask_to_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if once:
            result = run_cycle(engine(), home, settings, on_step=print_step, should_stop=lambda: stop["asked"])
            if result.outcome == "failed":
                raise typer.Exit(1)
            return
        cycles = run_watch(engine(), home, settings, every_s=seconds, should_stop=lambda: stop["asked"], on_step=print_step,
                           on_error=lambda exc: errors.print(f"[bold red]Error:[/] {exc}", highlight=False))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    console.print(f"Stopped after {cycles} cycle(s).")


@pipeline_app.command("runs")
def pipeline_runs(
    limit: Annotated[int, typer.Option("--limit", help="How many of the newest cycles.")] = 20,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also draw the timeline and the gate's numbers into this PNG.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Every cycle of `watch`: when, what each step did, its numbers and errors."""
    from tweetforge.pipeline.watch import pipeline_history

    history = pipeline_history(engine(), limit)
    if plot is not None and history:
        from tweetforge.pipeline.plots import plot_pipeline_history

        plot_pipeline_history(history, plot)
        errors.print(f"Plot saved to {plot}")
    if as_json:
        print_json(history)
        return
    if not history:
        console.print("No pipeline cycles yet: tweetforge watch --once")
        return
    for cycle in reversed(history):
        console.print(f"[bold]cycle #{cycle['id']}[/] {cycle['started_at']:%Y-%m-%d %H:%M:%S} UTC: {cycle['outcome']}", highlight=False)
        for step in cycle["steps"]:
            console.print("  ", end="")
            print_step(step)


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
    model: Annotated[list[str] | None,
                     typer.Option("--model", "-m", help="Load this model at start (repeat; NAME:* is every version of NAME); "
                                  "default: each name's champion.")] = None,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Posts decoded together at most.")] = 16,
    max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", help="LSTM: how long a request waits for others to batch with.")] = 10.0,
    queue_size: Annotated[int, typer.Option("--queue-size", help="Waiting requests per model before 503.")] = 64,
    allow_copies: Annotated[bool, typer.Option("--allow-copies", help="Turn off the copy filter.")] = False,
    max_adapters: Annotated[int, typer.Option("--max-adapters", min=1, help="LoRA adapters held in memory at most; the least recently "
                                              "used leaves and reloads from disk when asked for.")] = 64,
    merged: Annotated[bool, typer.Option("--merged", help="Serve each LoRA version as its own merged model, "
                                         "not as an adapter on a shared base.")] = False,
    no_ui: Annotated[bool, typer.Option("--no-ui", help="Serve the API only, without the web UI at /.")] = False,
    watch_registry_s: Annotated[float, typer.Option("--watch-registry", help="Seconds between looks at the registry: "
                                                    "a new champion is loaded and swapped in by itself.")] = 5.0,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Server processes on this port, each with its own models in memory "
                                         "(a shared base and its adapters per process).")] = 1,
    trusted_proxy: Annotated[list[str] | None, typer.Option("--trusted-proxy", help="A proxy in front of the server, as an address or "
                                                            "network (repeat): only its X-Forwarded-For names the client the rate limit "
                                                            "counts. Default: TWEETFORGE_TRUSTED_PROXIES, else none.")] = None,
    header_timeout: Annotated[float | None, typer.Option("--header-timeout", min=0.1, help="Seconds a client has to send a request's "
                                                         "head; then 408 and the connection is closed. Default: "
                                                         "TWEETFORGE_HEADER_TIMEOUT_S, else 10.")] = None,
    body_timeout: Annotated[float | None, typer.Option("--body-timeout", min=0.1, help="Seconds a client has to send a request's "
                                                       "body after its head; then 408. Default: TWEETFORGE_BODY_TIMEOUT_S, else 30.")] = None,
    limit_concurrency: Annotated[int | None, typer.Option("--limit-concurrency", min=1, help="Connections and requests in progress per "
                                                          "process; beyond them 503. Default: TWEETFORGE_MAX_CONNECTIONS, else 1000.")] = None,
) -> None:
    """Serve the models over HTTP: the web UI at /, REST at /v1, OpenAPI docs at /docs, metrics at /metrics."""
    import json
    import os

    import uvicorn

    from tweetforge.config import get_settings
    from tweetforge.serving.limits import GuardedHttpProtocol
    from tweetforge.serving.rate_limit import trusted_networks

    settings = get_settings()
    proxies = trusted_proxy or settings.trusted_proxies
    trusted_networks(proxies)  # a mistyped network stops the start with one line
    options = dict(models=model or [], max_batch=max_batch, max_wait_ms=max_wait_ms, queue_size=queue_size, allow_copies=allow_copies,
                   max_adapters=max_adapters, merged=merged, no_ui=no_ui, watch_registry_s=watch_registry_s, trusted_proxies=proxies,
                   header_timeout_s=header_timeout or settings.header_timeout_s, body_timeout_s=body_timeout or settings.body_timeout_s)
    # X-Forwarded-For is the app's to judge (trusted proxies only): uvicorn's own reading would believe any local client
    server = dict(host=host, port=port, log_level="warning", http=GuardedHttpProtocol, proxy_headers=False,
                  limit_concurrency=limit_concurrency or settings.max_connections, h11_max_incomplete_event_size=settings.max_header_bytes)
    quiet_libraries()
    if workers > 1:  # each worker process builds its own app from these options (uvicorn imports serving_app)
        os.environ[SERVE_OPTIONS] = json.dumps(options)
        errors.print(f"{workers} workers on http://{host}:{port} (each loads the models itself)", highlight=False)
        uvicorn.run("tweetforge.cli:serving_app", factory=True, workers=workers, **server)  # type: ignore[arg-type]
        return
    app, loaded = build_serving_app(**options)
    errors.print(f"Serving {loaded} on http://{host}:{port}", highlight=False)
    if not no_ui:
        errors.print(f"Web UI: http://{host}:{port}/", highlight=False)
    errors.print(f"API: http://{host}:{port}/v1 (OpenAPI: http://{host}:{port}/docs)", highlight=False)
    uvicorn.run(app, **server)  # type: ignore[arg-type]


SERVE_OPTIONS = "TWEETFORGE_SERVE_OPTIONS"


def serving_app():  # type: ignore[no-untyped-def]
    """The app of one `serve --workers N` process."""
    import json
    import os

    quiet_libraries()
    app, loaded = build_serving_app(**json.loads(os.environ[SERVE_OPTIONS]))
    errors.print(f"worker {os.getpid()}: serving {loaded}", highlight=False)
    return app


def build_serving_app(models: list[str], max_batch: int, max_wait_ms: float, queue_size: int, allow_copies: bool, max_adapters: int,
                      merged: bool, no_ui: bool, watch_registry_s: float, trusted_proxies: list[str], header_timeout_s: float,
                      body_timeout_s: float):  # type: ignore[no-untyped-def]
    """(the app with its models loaded and the registry watched, a line naming what is loaded)."""
    from tweetforge.config import get_settings
    from tweetforge.serving.app import create_app
    from tweetforge.serving.limits import GuardedHttpProtocol, Limits
    from tweetforge.serving.service import Service, ServiceSettings

    settings = get_settings()
    GuardedHttpProtocol.configure(header_timeout_s, settings.max_header_bytes)  # in this process: each --workers process builds its app
    limits = Limits.of(settings, body_timeout_s=body_timeout_s)
    service = Service(engine(), ServiceSettings(models, max_batch, max_wait_ms, queue_size, copy_filter=not allow_copies,
                                                shared_base=not merged, max_adapters=max_adapters))
    service.load()
    service.watch_registry(every_s=watch_registry_s)
    for ref, reason in service.failures.items():
        errors.print(f"[yellow]not loaded[/] {ref}: {reason}", highlight=False)
    loaded = (", ".join(m.version.ref + (" (adapter)" if m.shared_base else "") for m in service.loaded())
              or "none (train one: tweetforge train DATASET)")
    admin_token = settings.admin_token.get_secret_value() if settings.admin_token else None
    app = create_app(service, admin_token=admin_token, cors_origins=settings.cors_origins,
                     rate_limit_per_minute=settings.rate_limit_per_minute, trusted_proxies=trusted_proxies, limits=limits)
    if not no_ui:  # mounted last: at /, it takes every path the API does not answer
        from tweetforge.ui.app import mount_ui

        app = mount_ui(app, service, admin_token=admin_token)
    return app, loaded


@app.command()
def export(
    targets: Annotated[list[str], typer.Argument(metavar="MODEL... DIR", help="Models (NAME for its champion, NAME:VERSION, NAME:*), "
                                                 "then the directory to write.")],
    for_: Annotated[str, typer.Option("--for", help="The server that will take them: vllm.")] = "vllm",
    as_json: JsonOption = False,
) -> None:
    """Hand personas to another server. --for vllm: one base and each persona's LoRA adapter in the layout
    `vllm serve --enable-lora` loads, and that command line; what vLLM cannot take is named, with why."""
    from tweetforge.registry.adapters import export_for_vllm
    from tweetforge.registry.versions import list_versions, resolve

    if for_ != "vllm":
        raise TweetforgeError(f"--for {for_!r}: the one target so far is vllm")
    if len(targets) < 2:
        raise TweetforgeError("name at least one model and then the directory to write: tweetforge export alice --for vllm out/")
    *refs, directory = targets
    store = engine()
    chosen = []
    for ref in refs:
        if ref.endswith(":*"):
            chosen += [(v.ref, v) for v in list_versions(store, ref[:-2])] or [(ref, resolve(store, ref[:-2]))]
        else:
            chosen.append((ref, resolve(store, ref)))
    result = export_for_vllm(list(dict(chosen).items()), Path(directory).resolve())
    if as_json:
        print_json(result)
        return
    for name, adapter in result["adapters"].items():
        console.print(f"[green]exported[/] {name} ({adapter['ref']}, LoRA rank {adapter['rank']}) → {adapter['path']}", highlight=False)
    for name, reason in result["refused"].items():
        errors.print(f"[yellow]not exported[/] {name}: {reason}", highlight=False)
    if result["command"]:
        console.print(f"base → {result['base']}\nOn a GPU machine with vLLM:\n  {result['command']}", highlight=False)
    else:
        raise TweetforgeError("nothing to export: none of the models is a LoRA adapter vLLM can take")


db_app = typer.Typer(help="The SQL store's schema: its revision, and bringing it up to date.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("current")
def db_current(as_json: JsonOption = False) -> None:
    """The store's schema revision, and the newest this tweetforge knows (without upgrading)."""
    from tweetforge.config import get_settings
    from tweetforge.db.engine import create_store_engine
    from tweetforge.db.migrate import head, revision

    store = create_store_engine(get_settings().resolved_database_url)
    current, newest = revision(store), head()
    if as_json:
        print_json({"url": store.url.render_as_string(hide_password=True), "current": current, "head": newest, "up_to_date": current == newest})
        return
    state = "up to date" if current == newest else "behind: tweetforge db upgrade (or any command) upgrades it"
    console.print(f"{store.url.render_as_string(hide_password=True)}: revision {current or 'none'}, newest {newest} ({state})", highlight=False)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the store's schema to the newest revision (every command also does this the first time it opens a store)."""
    from tweetforge.config import get_settings
    from tweetforge.db.engine import create_store_engine
    from tweetforge.db.migrate import upgrade

    store = create_store_engine(get_settings().resolved_database_url)
    done = upgrade(store)
    where = store.url.render_as_string(hide_password=True)
    if done.changed:
        console.print(f"{where}: upgraded from revision {done.before or 'none'} to {done.after}", highlight=False)
    else:
        console.print(f"{where}: already at revision {done.after}", highlight=False)


@app.command()
def formats() -> None:
    """The input formats `ingest` reads (detected from content; --format overrides)."""
    from tweetforge.data.sources import FORMATS

    table = Table("format", "what")
    for name, description in FORMATS.items():
        table.add_row(name, description)
    console.print(table)


if __name__ == "__main__":
    app()
