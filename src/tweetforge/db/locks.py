"""Locks kept in the store, so processes on one machine or many (a PostgreSQL store) never run the same
work at once. A holder is 'host pid N'; a lock whose holder is a dead process on this host, or whose
heartbeat is older than the stale limit, is taken over."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from tweetforge.db.engine import writing
from tweetforge.db.schema import locks
from tweetforge.errors import TweetforgeError
from tweetforge.files import process_alive


class Locked(TweetforgeError):
    """Someone else holds the lock."""


def holder() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


def holder_alive(who: str) -> bool:
    host, _, pid = who.rpartition(" pid ")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine: only the age of its heartbeat tells
    return process_alive(int(pid))


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def acquire(engine: Engine, name: str, *, stale_s: float, what: str) -> None:
    """Take the lock `name` or raise Locked naming its holder."""
    me = holder()
    with writing(engine) as conn:
        row = conn.execute(select(locks).where(locks.c.name == name)).first()
        if row is not None:
            stale = row.heartbeat_at < _now() - timedelta(seconds=stale_s)
            if row.holder != me and not stale and holder_alive(row.holder):
                raise Locked(f"{what} is already running in {row.holder} since {row.acquired_at:%Y-%m-%d %H:%M:%S} UTC")
            conn.execute(delete(locks).where(locks.c.name == name, locks.c.holder == row.holder))
    try:
        with writing(engine) as conn:
            conn.execute(insert(locks).values(name=name, holder=me, acquired_at=_now(), heartbeat_at=_now()))
    except IntegrityError:
        raise Locked(f"{what} was started by another process at the same moment") from None


def heartbeat(engine: Engine, name: str) -> None:
    with writing(engine) as conn:
        conn.execute(update(locks).where(locks.c.name == name, locks.c.holder == holder()).values(heartbeat_at=_now()))


def release(engine: Engine, name: str) -> None:
    with writing(engine) as conn:
        conn.execute(delete(locks).where(locks.c.name == name, locks.c.holder == holder()))
