"""Engine creation: a SQLite file in WAL mode with real transactions by default, PostgreSQL by URL; the
schema is brought up to date the first time a process opens a store."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from tweetforge.db.migrate import upgrade
from tweetforge.errors import TweetforgeError

BUSY_TIMEOUT_MS = 30_000


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin (SQLAlchemy's
        # documented recipe); otherwise DDL and SELECTs run outside the import's transaction.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # type: ignore[no-untyped-def]
        # execution_options(sqlite_begin="BEGIN IMMEDIATE") takes the write lock at once (migrations do)
        connection.exec_driver_sql(connection.get_execution_options().get("sqlite_begin", "BEGIN"))


def create_store_engine(url: str) -> Engine:
    """An engine for the store at url, its schema as it is (engine_for also brings it up to date)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        _configure_sqlite(engine)
    else:
        from tweetforge.config import get_settings

        settings = get_settings()
        # pre_ping: a connection the server dropped (a restart, a network cut) is replaced, not handed out
        engine = create_engine(url, pool_pre_ping=True, pool_size=settings.database_pool_size, max_overflow=settings.database_max_overflow,
                               pool_timeout=10, connect_args={"connect_timeout": 5})
    return engine


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """The store at url, upgraded to the newest schema on first use in this process."""
    engine = create_store_engine(url)
    upgrade(engine)
    return engine


def get_engine() -> Engine:
    from tweetforge.config import get_settings

    return engine_for(get_settings().resolved_database_url)


class StoreBusy(TweetforgeError):
    """Another process kept the store's write lock longer than this one was willing to wait."""


def is_locked(error: OperationalError) -> bool:
    """SQLite's 'database is locked' / 'database table is locked': a writer holds the store."""
    return "is locked" in str(error.orig)


@contextmanager
def write_transaction(conn: Connection, on_wait: Callable[[str], None] | None = None, wait_s: float | None = None) -> Iterator[None]:
    """A transaction holding the store's write lock from its first statement. SQLite has one writer at a time:
    while another process writes (an import's merge, the server recording feedback), wait for it, say so once
    through on_wait, and give up after wait_s (the connections' busy timeout, 30 s, unless given). PostgreSQL
    locks rows, not the store: a plain transaction."""
    if conn.dialect.name != "sqlite":
        with conn.begin():
            yield
        return
    wait_s = BUSY_TIMEOUT_MS / 1000 if wait_s is None else wait_s
    deadline = time.monotonic() + wait_s
    told = False
    raw = conn.connection.dbapi_connection
    raw.execute("PRAGMA busy_timeout=1000")  # short tries, so that the wait is reported at once
    try:
        while True:
            try:
                transaction = conn.execution_options(sqlite_begin="BEGIN IMMEDIATE").begin()
                break
            except OperationalError as error:
                conn.rollback()
                if not is_locked(error):
                    raise
                if time.monotonic() > deadline:
                    raise StoreBusy(f"the store stayed locked by another writer for {wait_s:.0f} s; nothing was written, run it again") from None
                if on_wait and not told:
                    on_wait("waiting for the store: another process is writing to it")
                    told = True
    finally:
        raw.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execution_options(sqlite_begin="BEGIN")
    with transaction:
        yield


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """engine.begin() for a transaction that writes. On SQLite a plain BEGIN reads a snapshot first, and a
    transaction that read before writing fails at once ('database is locked', no waiting) when another
    process committed in between: the server's feedback, a sync and an import would refuse each other."""
    with engine.connect() as conn, write_transaction(conn):
        yield conn
