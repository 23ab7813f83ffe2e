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
