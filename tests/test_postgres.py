"""The same store on a real PostgreSQL server: imports, history, rollback, snapshots. CI starts a
server and sets TWEETFORGE_TEST_POSTGRES_URL (see .ci/run); elsewhere these tests are skipped."""

from __future__ import annotations

import os

import pytest

from conftest import STORE_TABLES, archive_tweet, make_archive, shared, table_dump
from tweetforge.data.ingest import ingest
from tweetforge.data.snapshots import SnapshotRequest, create_snapshot, read_snapshot
from tweetforge.data.sources import ReadOptions, SourceError, open_source
from tweetforge.db.engine import engine_for
from tweetforge.db.schema import metadata

URL = os.environ.get("TWEETFORGE_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not URL, reason="TWEETFORGE_TEST_POSTGRES_URL is not set (CI sets it)")


@pytest.fixture
def pg():
    engine = engine_for(URL)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    yield engine
    metadata.drop_all(engine)


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
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO optouts (handle, added_at) VALUES ('someone', now())"))
    done = upgrade(engine)
    assert (done.before, done.after) == (None, head()) and revision(engine) == head()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT handle FROM optouts")).scalars().all() == ["someone"]
    assert not upgrade(engine).changed

    empty()
    assert upgrade(engine).after == head() and revision(engine) == head()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM posts")).scalar() == 0
