"""Schema migrations with Alembic. Every data home upgrades itself the first time a process opens it
(engine.engine_for calls upgrade); `tweetforge db upgrade` and `tweetforge db current` do it by hand.

A new store gets today's schema straight from the table definitions and is stamped at the newest
revision (Alembic's recipe for a database built from scratch); an existing one runs the revisions it
lacks. A home made before migrations existed has no version table: it runs from the baseline, which
creates only the tables it is missing. The upgrade holds the store's write lock (SQLite: BEGIN
IMMEDIATE; PostgreSQL: an advisory lock), so processes opening one home at once migrate it once."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Connection, Engine, inspect, text

from tweetforge.db.schema import metadata
from tweetforge.errors import TweetforgeError

MIGRATIONS = Path(__file__).parent / "migrations"
POSTGRES_LOCK = 0x7477_6565_7466_6F72  # pg_advisory_xact_lock key: "tweetfor"


class SchemaError(TweetforgeError):
    """A store this tweetforge cannot bring up to date."""


@dataclass(frozen=True)
class Upgrade:
    before: str | None
    """The store's revision before (None: no version table, a new or a pre-migration store)."""
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


@lru_cache(maxsize=1)
def scripts():  # type: ignore[no-untyped-def]
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS))


def head() -> str:
    return scripts().get_current_head()


def current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _migrate(connection: Connection, before: str | None) -> None:
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    tables = set(inspect(connection).get_table_names())
    if before is None and not tables & set(metadata.tables):
        metadata.create_all(connection)
        MigrationContext.configure(connection).stamp(scripts(), "head")
        return
    if before is not None and before not in {s.revision for s in scripts().walk_revisions()}:
        raise SchemaError(f"the store is at schema revision {before}, which this tweetforge does not know (newest: {head()}): "
                          "it was written by a newer tweetforge; upgrade tweetforge")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def upgrade(engine: Engine) -> Upgrade:
    """Bring the store to the newest revision; a store already there costs one query and no lock."""
    target = head()
    with engine.connect() as connection:
        before = current_revision(connection)
        connection.rollback()
        if before == target:
            return Upgrade(before, target)
        if engine.dialect.name == "sqlite":
            connection.execution_options(sqlite_begin="BEGIN IMMEDIATE")
        with connection.begin():
            if engine.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": POSTGRES_LOCK})
            before = current_revision(connection)  # another process may have migrated while this one waited
            if before != target:
                _migrate(connection, before)
    return Upgrade(before, target)


def revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return current_revision(connection)
