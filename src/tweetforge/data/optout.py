"""Authors who asked not to be modelled: refused at import, excluded from every snapshot."""

from __future__ import annotations

from sqlalchemy import Engine, delete, func, insert, select, tuple_

from tweetforge.data.ingest import now_utc
from tweetforge.db.engine import writing
from tweetforge.db.schema import optouts, post_history, post_imports, posts
from tweetforge.errors import TweetforgeError


class OptOutError(TweetforgeError):
    """An opt-out that cannot be recorded as asked."""


def normalise(handle: str) -> str:
    return handle.strip().lstrip("@").lower()


def add_optout(engine: Engine, handle: str, reason: str | None = None, purge: bool = False) -> int:
    """Opt a handle out; with purge, delete its stored posts and their history. Returns posts deleted."""
    key = normalise(handle)
    if not key:
        raise OptOutError("handle is empty")
    with writing(engine) as conn:
        if conn.execute(select(optouts.c.handle).where(optouts.c.handle == key)).first() is None:
            conn.execute(insert(optouts).values(handle=key, added_at=now_utc(), reason=reason))
        if not purge:
            return 0
        theirs = select(posts.c.network, posts.c.post_id).where(func.lower(posts.c.author) == key)
        for table in (post_history, post_imports):
            conn.execute(delete(table).where(tuple_(table.c.network, table.c.post_id).in_(theirs)))
        return conn.execute(delete(posts).where(func.lower(posts.c.author) == key)).rowcount


def remove_optout(engine: Engine, handle: str) -> bool:
    with writing(engine) as conn:
        return conn.execute(delete(optouts).where(optouts.c.handle == normalise(handle))).rowcount > 0


def list_optouts(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        return [
            {"handle": r.handle, "added_at": r.added_at.isoformat(), "reason": r.reason}
            for r in conn.execute(select(optouts).order_by(optouts.c.handle))
        ]
