from __future__ import annotations

from dataclasses import dataclass, field

from tweetforge.data.post import BadRecord
from tweetforge.data.sources.errors import SourceError


@dataclass(frozen=True)
class Limits:
    """Bounds on what an import reads, so that no file can exhaust memory or time (settings TWEETFORGE_IMPORT_*)."""

    max_line_bytes: int = 1_000_000
    max_archive_file_bytes: int = 4096 << 20
    max_zip_ratio: int = 100
    max_archive_files: int = 200_000
    max_bad_records: int = 100_000

    @classmethod
    def from_settings(cls) -> Limits:
        from tweetforge.config import get_settings

        settings = get_settings()
        return cls(
            max_line_bytes=settings.import_max_line_bytes,
            max_archive_file_bytes=settings.import_max_archive_file_mb << 20,
            max_zip_ratio=settings.import_max_zip_ratio,
            max_archive_files=settings.import_max_archive_files,
            max_bad_records=settings.import_max_bad_records,
        )


class BadRecordCount:
    """Counts the bad records a reader yields: an import with --skip-bad keeps each one in memory."""

    def __init__(self, where: str, limits: Limits):
        self.where = where
        self.limit = limits.max_bad_records
        self.seen = 0

    def __call__(self, bad: BadRecord) -> BadRecord:
        self.seen += 1
        if self.seen > self.limit:
            raise SourceError(self.where, f"more than {self.limit:,} bad records (limit TWEETFORGE_IMPORT_MAX_BAD_RECORDS): "
                                          f"is it the format it was read as? (the last: {bad.location}: {bad.reason})")
        return bad


@dataclass(frozen=True)
class ReadOptions:
    """What a user can tell a source on the command line; every source accepts every option it can use."""

    author: str | None = None
    """Overrides the author of every post (and is required by exports without an author column)."""
    encoding: str | None = None
    """None: the format's own default (UTF-8, Latin-1 for Sentiment140), or what the file's byte order mark says."""
    network: str = "twitter"
    text_column: str | None = None
    author_column: str | None = None
    id_column: str | None = None
    time_column: str | None = None
    limits: Limits = field(default_factory=Limits.from_settings)
