"""Dataset snapshots: immutable Parquet files of cleaned posts with a frozen train/validation/test split,
and a manifest row in the database. Readable by pyarrow, DuckDB and Polars without tweetforge.

The split of a post is a function of its id alone (a hash), so adding posts never moves an old post
to another split: the test split stays frozen across retrains."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import Engine, Row, insert, select

from tweetforge import __version__
from tweetforge.artifacts import cache_root, is_remote, join, keep_as_cached, local_directory, upload_content
from tweetforge.data.clean import RULES_VERSION, CleaningRules, clean, cleaning_stats
from tweetforge.data.generated import refused_by_author
from tweetforge.data.store import read_posts
from tweetforge.db.engine import writing
from tweetforge.db.schema import datasets
from tweetforge.errors import TweetforgeError
from tweetforge.files import replace_directory, staging_directory

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.90, 0.05, 0.05)
MIN_CHARACTERS = 6_000
"""HuggingTweets refuses to train below this many characters of an author's kept posts..."""
WARN_CHARACTERS = 40_000
"""...and warns below this many."""
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
SNAPSHOT_COLUMNS = ["network", "post_id", "author", "text", "created_at", "split", "is_reply", "likes", "reposts", "copy"]


class DatasetError(TweetforgeError):
    """A dataset that cannot be created or found; the message says why and what to do."""


@dataclass(frozen=True)
class SnapshotRequest:
    name: str
    authors: tuple[str, ...] = ()
    """Empty: every stored author (not opted out)."""
    since: date | None = None
    until: date | None = None
    rules: CleaningRules = field(default_factory=CleaningRules)
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    balance: bool = False
    """Oversample smaller authors' training posts up to the largest author's character count."""
    limit: int | None = None
    """Only the first N stored posts in time (before cleaning), e.g. for a quick first model."""
    pipeline_of: str | None = None
    """The model name a pipeline cycle froze this snapshot for (it trains a challenger on it)."""

    def filters(self) -> dict[str, Any]:
        return ({"pipeline_of": self.pipeline_of} if self.pipeline_of else {}) | {
            "authors": list(self.authors),
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "fractions": list(self.fractions),
            "balance": self.balance,
            "limit": self.limit,
        }


@dataclass
class Snapshot:
    name: str
    location: str
    """A directory, or the URL of its copy under TWEETFORGE_ARTIFACTS."""
    content_hash: str
    created_at: datetime
    rules_version: str
    authors: list[str]
    filters: dict[str, Any]
    counts: dict[str, Any]
    posts: int
    warnings: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        """The snapshot's directory on this machine (a remote one is downloaded into the cache on first use)."""
        return local_directory(self.location)

    @property
    def data_file(self) -> Path:
        return self.path / "data.parquet"

    def manifest(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.location or None,  # a remote snapshot's URL names its content hash, so is not in it
            "content_hash": self.content_hash,
            "created_at": self.created_at.isoformat(),
            "rules_version": self.rules_version,
            "authors": self.authors,
            "filters": self.filters,
            "counts": self.counts,
            "posts": self.posts,
        }


def split_of(network: str, post_id: str, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> str:
    return SPLITS[_split_index(_unit_hash(network, post_id), fractions)]


def _unit_hash(network: str, post_id: str) -> float:
    digest = hashlib.blake2b(f"{network}:{post_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _split_index(u: float, fractions: tuple[float, float, float]) -> int:
    if u < fractions[0]:
        return 0
    if u < fractions[0] + fractions[1]:
        return 1
    return 2


def assign_splits(frame: pl.DataFrame, fractions: tuple[float, float, float]) -> pl.DataFrame:
    units = [_unit_hash(n, p) for n, p in zip(frame["network"].to_list(), frame["post_id"].to_list())]
    labels = [SPLITS[_split_index(u, fractions)] for u in units]
    return frame.with_columns(pl.Series("split", labels, dtype=pl.String))


def oversample(frame: pl.DataFrame) -> pl.DataFrame:
    """Repeat smaller authors' training posts until each has about the largest author's characters
    (HuggingTweets' multi-author 'cyborg' balancing); copies carry copy >= 1. Deterministic."""
    train = frame.filter(pl.col("split") == "train")
    chars = train.group_by("author").agg(pl.col("text").str.len_chars().sum().alias("chars"))
    target = chars["chars"].max() if chars.height else 0
    extra = []
    for author, author_chars in chars.iter_rows():
        if not author_chars or author_chars >= target:
            continue
        rows = train.filter(pl.col("author") == author).sort(["network", "post_id"])
        ratio = target / author_chars
        whole, part = int(math.floor(ratio)), ratio - math.floor(ratio)
        for copy in range(1, whole):
            extra.append(rows.with_columns(pl.lit(copy, dtype=pl.Int32).alias("copy")))
        if part > 0:
            take = int(round(part * rows.height))
            if take:
                extra.append(rows.sample(n=take, seed=0).with_columns(pl.lit(whole, dtype=pl.Int32).alias("copy")))
    return pl.concat([frame, *extra]) if extra else frame


def content_hash(frame: pl.DataFrame) -> str:
    """sha256 of the snapshot's rows in a canonical order and text form: equal data, equal hash."""
    canonical = frame.sort(["network", "post_id", "copy"]).select(
        pl.concat_str(
            [pl.col(c).cast(pl.String).fill_null("") for c in ("network", "post_id", "author", "split", "copy", "text")],
            separator="\t",
        )
    )
    digest = hashlib.sha256()
    for chunk in _chunks(canonical.to_series().to_list(), 50_000):
        digest.update("\n".join(chunk).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _chunks(items: list[str], size: int):  # type: ignore[no-untyped-def]
    for start in range(0, len(items), size):
        yield items[start : start + size]


def counts_of(frame: pl.DataFrame) -> dict[str, Any]:
    """Posts per split and author (with oversampled copies), and per author the characters kept."""
    per_split: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    for split, author, n in frame.group_by(["split", "author"]).len().iter_rows():
        per_split[split][author] = n
    originals = frame.filter(pl.col("copy") == 0)
    characters = {a: int(c) for a, c in originals.group_by("author").agg(pl.col("text").str.len_chars().sum()).iter_rows()}
    return {"splits": per_split, "characters": characters, "oversampled": int((frame["copy"] > 0).sum())}


def _day(value: date | None) -> datetime | None:
    return datetime(value.year, value.month, value.day) if value else None


def create_snapshot(engine: Engine, datasets_dir: Path | str, request: SnapshotRequest) -> Snapshot:
    """Clean the selected posts, split, guard the minimum data, and write the snapshot atomically:
    the directory appears under its name only once the manifest row is committed. datasets_dir is a local
    directory, or a URL under which the snapshot goes to <name>/<tree hash>/ (artifacts.py)."""
    if not NAME_PATTERN.match(request.name):
        raise DatasetError(f"dataset name {request.name!r}: use letters, digits, '.', '_' or '-' (at most 100)")
    if not (abs(sum(request.fractions) - 1) < 1e-9 and all(f >= 0 for f in request.fractions)):
        raise DatasetError(f"split fractions {request.fractions} must be non-negative and sum to 1")
    remote = is_remote(datasets_dir)
    final = None if remote else Path(datasets_dir) / request.name
    with engine.connect() as conn:
        if conn.execute(select(datasets.c.name).where(datasets.c.name == request.name)).first():
            raise DatasetError(f"dataset {request.name!r} exists and snapshots are immutable: choose a new name")
        frame = read_posts(conn, request.authors or None, _day(request.since), _day(request.until), request.limit)
        refused_generated = refused_by_author(conn)
    if final is not None and final.exists() and not (final / "manifest.json").exists():
        # with a manifest it is a snapshot whose process died before its row was committed: replaced below
        raise DatasetError(f"{final} exists but is not a registered dataset: move it away or choose a new name")
    if frame.height == 0:
        who = ", ".join(request.authors) if request.authors else "any author"
        raise DatasetError(f"no stored posts of {who} match: import some first (tweetforge ingest ...)")
    missing = {a.lower() for a in request.authors} - {a.lower() for a in frame["author"].unique().to_list()}
    if missing:
        raise DatasetError(f"no stored posts of {', '.join(sorted(missing))} (opted out, or never imported)")

    cleaned = clean(frame, request.rules)
    stats = cleaning_stats(cleaned, refused_generated)
    warnings = []
    for row in stats:
        if row["characters_kept"] < MIN_CHARACTERS:
            raise DatasetError(
                f"@{row['author']} has {row['characters_kept']:,} characters left after cleaning "
                f"({row['kept']:,} of {row['downloaded']:,} posts); at least {MIN_CHARACTERS:,} are needed to train"
            )
        if row["characters_kept"] < WARN_CHARACTERS:
            warnings.append(
                f"@{row['author']} has only {row['characters_kept']:,} characters after cleaning "
                f"(fewer than {WARN_CHARACTERS:,}): expect a model that copies or rambles"
            )
    kept = assign_splits(cleaned.filter(pl.col("drop_reason").is_null()), request.fractions).with_columns(
        pl.col("reply_to").is_not_null().alias("is_reply"), pl.lit(0, dtype=pl.Int32).alias("copy")
    )
    if request.balance:
        kept = oversample(kept)
    kept = kept.select(SNAPSHOT_COLUMNS).sort(["split", "created_at", "network", "post_id", "copy"], nulls_last=True)
    dropped = cleaned.filter(pl.col("drop_reason").is_not_null()).select(
        "network", "post_id", "author", "created_at", "drop_reason", "raw_text"
    )

    created_at = datetime.now()
    snapshot = Snapshot(
        name=request.name,
        location=str(final) if final else "",
        content_hash=content_hash(kept),
        created_at=created_at,
        rules_version=RULES_VERSION,
        authors=sorted(kept["author"].unique().to_list(), key=str.lower),
        filters={**request.filters(), "rules": request.rules.describe()},
        counts={**counts_of(kept), "cleaning": stats},
        posts=kept.height,
        warnings=warnings,
    )
    staging = staging_directory(cache_root() if remote else Path(datasets_dir), request.name)
    try:
        kept.write_parquet(staging / "data.parquet", compression="zstd", statistics=True)
        dropped.write_parquet(staging / "dropped.parquet", compression="zstd")
        manifest = snapshot.manifest() | {"tweetforge_version": __version__, "files": ["data.parquet", "dropped.parquet"]}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        if remote:
            snapshot.location, marker = upload_content(staging, join(str(datasets_dir), request.name))
        with writing(engine) as conn:
            conn.execute(
                insert(datasets).values(
                    name=snapshot.name,
                    path=snapshot.location,
                    content_hash=snapshot.content_hash,
                    created_at=created_at,
                    rules_version=RULES_VERSION,
                    authors=snapshot.authors,
                    filters=snapshot.filters,
                    counts=snapshot.counts,
                    posts=snapshot.posts,
                )
            )
            if final is not None:  # the name's row is ours now: a folder there is a killed process's leftover
                replace_directory(staging, final)
        if remote:
            keep_as_cached(staging, snapshot.location, marker)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return snapshot


def _from_row(row: Row) -> Snapshot:
    return Snapshot(
        name=row.name,
        location=row.path,
        content_hash=row.content_hash,
        created_at=row.created_at,
        rules_version=row.rules_version,
        authors=row.authors,
        filters=row.filters,
        counts=row.counts,
        posts=row.posts,
    )


def list_snapshots(engine: Engine) -> list[Snapshot]:
    with engine.connect() as conn:
        return [_from_row(r) for r in conn.execute(select(datasets).order_by(datasets.c.created_at, datasets.c.name))]


def get_snapshot(engine: Engine, name: str) -> Snapshot:
    with engine.connect() as conn:
        row = conn.execute(select(datasets).where(datasets.c.name == name)).first()
    if row is None:
        known = [s.name for s in list_snapshots(engine)]
        hint = f" (datasets: {', '.join(known)})" if known else " (none yet: tweetforge dataset create NAME)"
        raise DatasetError(f"no dataset named {name!r}{hint}")
    return _from_row(row)


def read_snapshot(snapshot: Snapshot, split: str | None = None) -> pl.DataFrame:
    frame = pl.read_parquet(snapshot.data_file)
    return frame.filter(pl.col("split") == split) if split else frame


def training_texts(snapshot: Snapshot, authors: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(texts, authors) of the snapshot's train split in snapshot order: the order copy-index rows refer to."""
    frame = read_snapshot(snapshot, "train")
    if authors is not None:
        frame = frame.filter(pl.col("author").str.to_lowercase().is_in([a.lower() for a in authors]))
    return frame["text"].to_list(), frame["author"].to_list()
