"""The same store on a real PostgreSQL server: imports, history, rollback, snapshots. CI starts a
server and sets TWEETFORGE_TEST_POSTGRES_URL (see .ci/run); elsewhere these tests are skipped."""

from __future__ import annotations

import os

import pytest

from conftest import STORE_TABLES, archive_tweet, make_archive, shared, table_dump
from tweetforge.data.ingest import ingest
from tweetforge.data.snapshots import SnapshotRequest, create_snapshot, read_snapshot
from tweetforge.data.sources import ReadOptions, SourceError, open_source
from tweetforge.db.schema import metadata

URL = os.environ.get("TWEETFORGE_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not URL, reason="TWEETFORGE_TEST_POSTGRES_URL is not set (CI sets it)")


def drop_everything() -> None:
    from sqlalchemy import text

    from tweetforge.db.engine import create_store_engine

    raw = create_store_engine(URL)  # no upgrade: whatever an earlier run left is dropped as it is
    metadata.drop_all(raw)
    with raw.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    raw.dispose()


@pytest.fixture
def pg():
    from tweetforge.db.engine import create_store_engine
    from tweetforge.db.migrate import upgrade

    drop_everything()
    engine = create_store_engine(URL)
    upgrade(engine)
    yield engine
    engine.dispose()
    drop_everything()


def load(engine, spec, **options):
    return ingest(engine, open_source(str(spec), None, ReadOptions(**options)))


def test_postgres_imports_merge_history_and_snapshot(pg, tmp_path):
    first = load(pg, "example:trump")
    assert (first.new, first.updated) == (20761, 0)
    archive = load(pg, shared("trump_archive.csv"), author="realDonaldTrump")
    assert (archive.new, archive.updated, archive.unchanged) == (2524, 468, 1584)  # the same figures as SQLite
    again = load(pg, shared("trump_archive.csv"), author="realDonaldTrump")
    assert (again.new, again.updated, again.unchanged) == (0, 0, 4576)

    before = table_dump(pg, *STORE_TABLES)
    bad = tmp_path / "bad.zip"
    make_archive(bad, "realDonaldTrump", [[archive_tweet("1", "fine post here today"), {"tweet": {"id_str": "2"}}]])
    with pytest.raises(SourceError, match="record 2: no text field"):
        load(pg, bad)
    assert table_dump(pg, *STORE_TABLES) == before

    snap = create_snapshot(pg, tmp_path / "ds", SnapshotRequest("pg-v1", ("realdonaldtrump",)))
    assert read_snapshot(snap).height == snap.posts > 20000


def test_postgres_stores_and_reuses_evaluations(pg, tmp_path):
    from tweetforge.evaluation.evaluate import (
        EvalSettings,
        latest_evaluation,
        run_evaluations,
    )

    load(pg, shared("trump_archive.csv"), author="realDonaldTrump")
    snap = create_snapshot(pg, tmp_path / "ds", SnapshotRequest("pg-eval", ("realDonaldTrump",)))
    settings = EvalSettings(samples=20, seed=1, max_test_posts=50)
    first = run_evaluations(pg, tmp_path, ["markov"], "pg-eval", settings, report_to="none").evaluations[0]
    stored = latest_evaluation(pg, "markov", snap.content_hash, settings)
    assert stored.id == first.id and stored.metrics == first.metrics and len(stored.samples) == 20
    assert run_evaluations(pg, tmp_path, ["markov"], "pg-eval", settings, report_to="none").evaluations[0].id == first.id


def test_postgres_store_upgrades_itself(tmp_path):
    """A store as 0.1.0 left it (tables from create_all, no version table) runs the baseline migration on the
    real server and keeps its rows; an empty database is made and stamped."""
    from sqlalchemy import text

    from tweetforge.db.engine import create_store_engine
    from tweetforge.db.migrate import head, revision, upgrade

    engine = create_store_engine(URL)

    def empty() -> None:
        metadata.drop_all(engine)
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))

    empty()
    from alembic import command
    from alembic.config import Config

    from tweetforge.db.migrate import MIGRATIONS

    with engine.begin() as conn:  # 0.1.0's tables: the baseline revision, without the version table
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(text("INSERT INTO optouts (handle, added_at) VALUES ('someone', now())"))
    done = upgrade(engine)
    assert (done.before, done.after) == (None, head()) and revision(engine) == head()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT handle FROM optouts")).scalars().all() == ["someone"]
        widened = conn.execute(text("SELECT character_maximum_length FROM information_schema.columns "
                                    "WHERE table_name = 'posts' AND column_name = 'post_id'")).scalar()
        assert widened == 300  # revision 0002 on the real server: room for Bluesky and Mastodon URIs
    assert not upgrade(engine).changed

    empty()
    assert upgrade(engine).after == head() and revision(engine) == head()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM posts")).scalar() == 0


def test_postgres_follows_a_live_account_with_long_post_ids(pg, monkeypatch):
    """Bluesky's at:// URIs pass 64 characters; PostgreSQL enforces the column width SQLite ignores."""
    from sqlalchemy import text

    from fake_networks import FakeNetworks
    from tweetforge.config import get_settings
    from tweetforge.data.sources.live import parse_handle
    from tweetforge.data.sync import followed, sync_account

    monkeypatch.setenv("TWEETFORGE_SYNC_BACKOFF_S", "0.01")
    get_settings.cache_clear()
    with FakeNetworks() as net:
        net.bluesky_account("a-rather-long-handle.bsky.social", 130)
        result = sync_account(pg, parse_handle("bsky:a-rather-long-handle.bsky.social"), base_url=net.url)
    get_settings.cache_clear()
    assert result.new == 130 and followed(pg)[0]["stored"] == 130
    with pg.connect() as conn:
        assert conn.execute(text("SELECT max(length(post_id)) FROM posts")).scalar() > 64


def test_postgres_runs_a_bot_and_a_watch_cycle(pg, monkeypatch, tmp_path, tiny_gpt2):
    """The scheduler's path at scale: `watch --once` against a PostgreSQL store (what cron or a CronJob runs)."""
    import random

    from fake_networks import FakeNetworks
    from tweetforge.config import get_settings
    from tweetforge.pipeline.bot import run_bot
    from tweetforge.pipeline.watch import WatchSettings, run_cycle
    from tweetforge.registry.versions import resolve

    monkeypatch.setenv("TWEETFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TWEETFORGE_SYNC_BACKOFF_S", "0.01")
    get_settings.cache_clear()
    words = "the people want great jobs and lower taxes for every family in our country today we will win again".split()
    rng = random.Random(3)
    try:
        with FakeNetworks() as net:
            alice = net.bluesky_account("alice.bsky.social")
            for i in range(400):
                alice.add(" ".join(rng.choice(words) for _ in range(12)) + f" #{i}")
            home = get_settings().resolved_home
            run_bot(pg, home, ["bsky:alice.bsky.social"], base=str(tiny_gpt2), minutes=1, base_url=net.url, samples=12, report_to="none")
            assert resolve(pg, "alice:champion").version == 1
            for i in range(150):
                alice.add(" ".join(rng.choice(words) for _ in range(12)) + f" new {i}")
            cycle = run_cycle(pg, home, WatchSettings(retrain_after=50, train_minutes=1, samples=12, margin=10, report_to="none"))
    finally:
        get_settings.cache_clear()
    assert cycle.outcome == "ok" and [(s["step"], s["outcome"]) for s in cycle.steps if s["step"] != "cycle"][-1] == ("gate", "promoted")
    assert resolve(pg, "alice:champion").version == 2


AWKWARD_TEXTS = (
    "a tab\there and\ttwo",
    "line one\nline two\r\nline three\rend",
    "back\\slash, \\t and \\n spelled out, a trailing one\\",
    "\\N",  # the text COPY format's NULL marker, as a post
    "\\.",  # its end-of-data marker
    "quotes ' \" ` and a comma, here",
    "emoji 🤣 🇺🇸 👩‍👩‍👧 and 𝕏",
    "",
    "   spaces around   ",
)


def write_jsonl(path, posts: list[dict]):
    import json

    path.write_text("".join(json.dumps(post) + "\n" for post in posts), encoding="utf-8")
    return path


def awkward_posts() -> list[dict]:
    posts = [
        {"id": f"awk-{n}", "author": "ann", "text": text, "created_at": "2024-01-02T03:04:05.123456", "favorite_count": n, "lang": "en"}
        for n, text in enumerate(AWKWARD_TEXTS)
    ]
    posts += [
        {"id": "nulls", "author": "ann", "text": "no time, no counts, no language"},
        {"id": "zeros", "author": "ann", "text": "zero counts", "favorite_count": 0, "retweet_count": 0, "created_at": "2024-01-01T00:00:00"},
        {"id": "offset", "author": "ann", "text": "a time with an offset", "created_at": "2024-06-30T23:30:00-02:00"},
        {"id": "reply", "author": "ann", "text": "a reply to someone unknown", "in_reply_to_status_id_str": "99"},
        {"id": "at://did:plc:" + "x" * 250, "author": "ann", "text": "a long Bluesky-like id"},
        {"id": "rt", "author": "ann", "text": "RT @bob: a repost"},
    ]
    return posts


def imported_tables(engine, files) -> tuple[list[tuple[int, int, int]], dict[str, list]]:
    counts = [(r.new, r.updated, r.unchanged) for r in (load(engine, f) for f in files)]
    return counts, table_dump(engine, "posts", "post_imports", "post_history")


def test_postgres_copy_stores_exactly_what_inserts_store(pg, tmp_path):
    """Staging through COPY (the default) and through the multi-row INSERTs keep the same posts, counts and
    history, whatever the text holds; the texts come back exactly as the file had them."""
    from sqlalchemy import event, text

    from tweetforge.data.store import STAGE_WITH
    from tweetforge.db.migrate import upgrade

    first = write_jsonl(tmp_path / "first.jsonl", awkward_posts())
    edited = awkward_posts()
    edited[1]["text"] = "edited:\ta tab, a newline\n, a backslash \\ and \\N 🤣"
    edited.append({"id": "new", "author": "ann", "text": "a new post\\N\twith\nall of it"})
    second = write_jsonl(tmp_path / "second.jsonl", edited)
    files = (first, second, second, first)

    staging_inserts = []

    @event.listens_for(pg, "before_cursor_execute")
    def seen(_conn, _cursor, statement, *_):  # a COPY goes past SQLAlchemy's statement events
        if statement.startswith("INSERT INTO staging_posts"):
            staging_inserts.append(statement)

    through_inserts = imported_tables(pg.execution_options(**{STAGE_WITH: "insert"}), files)
    assert staging_inserts
    drop_everything()
    upgrade(pg)
    staging_inserts.clear()
    through_copy = imported_tables(pg, files)
    assert not staging_inserts

    assert through_copy == through_inserts
    n = len(awkward_posts())
    assert through_copy[0] == [(n, 0, 0), (1, 1, n - 1), (0, 0, n + 1), (0, 1, n - 1)]
    with pg.connect() as conn:
        stored = dict(conn.execute(text("SELECT post_id, text FROM posts")).all())
        history = conn.execute(text("SELECT post_id, text, replaced_by_import_id FROM post_history ORDER BY id")).all()
        nulls = conn.execute(text("SELECT created_at, likes, reposts, language, reply_to FROM posts WHERE post_id = 'nulls'")).one()
        reply_to = conn.execute(text("SELECT reply_to FROM posts WHERE post_id = 'reply'")).scalar()
        times = dict(conn.execute(text("SELECT post_id, created_at FROM posts WHERE post_id IN ('awk-0', 'offset')")).all())
    assert [stored[f"awk-{n}"] for n in range(len(AWKWARD_TEXTS))] == list(AWKWARD_TEXTS)  # the fourth import put awk-1 back
    assert stored["new"] == "a new post\\N\twith\nall of it"
    assert [tuple(h) for h in history] == [("awk-1", AWKWARD_TEXTS[1], 2), ("awk-1", edited[1]["text"], 4)]
    assert tuple(nulls) == (None, None, None, None, None) and reply_to == ""
    assert str(times["awk-0"]) == "2024-01-02 03:04:05.123456" and str(times["offset"]) == "2024-07-01 01:30:00"


def many_posts(count: int, start: int = 0) -> list[dict]:
    return [{"id": str(n), "author": "ann", "text": f"post number {n}\twith a tab and a \\ backslash"} for n in range(start, start + count)]


@pytest.mark.parametrize("stage_with", ["copy", "insert"])
def test_postgres_failed_import_after_many_good_posts_changes_nothing(pg, tmp_path, stage_with):
    """A bad record, or a text no store can hold (a NUL), after more posts than one staging batch: the
    import stops, the store is as it was, and the same connections import the good file afterwards."""
    from tweetforge.data.store import STAGE_BATCH, STAGE_WITH

    engine = pg.execution_options(**{STAGE_WITH: stage_with})
    load(engine, write_jsonl(tmp_path / "earlier.jsonl", many_posts(100, start=10**6)))
    before = table_dump(pg, *STORE_TABLES)
    good = many_posts(STAGE_BATCH + 5_000)
    broken = write_jsonl(tmp_path / "broken.jsonl", good)
    with broken.open("a", encoding="utf-8") as f:
        f.write("{not json\n")
    with pytest.raises(SourceError, match=rf"line {len(good) + 1}: not valid JSON"):
        load(engine, broken)
    assert table_dump(pg, *STORE_TABLES) == before

    with_nul = write_jsonl(tmp_path / "nul.jsonl", good + [{"id": "nul", "author": "ann", "text": "a NUL \u0000 inside"}])
    with pytest.raises(SourceError, match=rf"line {len(good) + 1}: contains a NUL character"):  # no store can hold it
        load(engine, with_nul)
    assert table_dump(pg, *STORE_TABLES) == before

    assert load(engine, write_jsonl(tmp_path / "good.jsonl", good)).new == len(good)


def test_postgres_copy_interrupted_by_its_posts_changes_nothing(pg, tmp_path):
    """The posts a COPY streams can fail half way (a live source's page that cannot be read): the
    transaction rolls back whole, and the same connection stages and merges the next import."""
    from tweetforge.data.post import Post
    from tweetforge.data.store import begin_staging, merge_staged, stage

    load(pg, write_jsonl(tmp_path / "earlier.jsonl", many_posts(100)))
    before = table_dump(pg, *STORE_TABLES)

    def posts_then_a_lost_page():
        for n in range(5_000):
            yield Post("twitter", f"live-{n}", "ann", f"live post {n}")
        raise ConnectionError("page 3 could not be read")

    with pg.connect() as conn:
        with pytest.raises(ConnectionError, match="page 3"), conn.begin():
            begin_staging(conn)
            stage(conn, [Post("twitter", "first", "ann", "a first batch went through")])
            stage(conn, posts_then_a_lost_page())
        assert table_dump(pg, *STORE_TABLES) == before
        with conn.begin():
            begin_staging(conn)
            stage(conn, [Post("twitter", f"live-{n}", "ann", f"live post {n}") for n in range(50)])
            counts = merge_staged(conn, 1)
    assert (counts.new, counts.updated, counts.unchanged) == (50, 0, 0)
