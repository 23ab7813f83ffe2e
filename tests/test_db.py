"""Schema migrations: a new store, a store made before migrations existed, one made by a newer tweetforge,
and several processes opening one new store at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from conftest import ROOT, shared
from tweetforge.cli import app
from tweetforge.data.ingest import ingest
from tweetforge.data.sources import open_source
from tweetforge.data.store import read_posts
from tweetforge.db.engine import engine_for
from tweetforge.db.migrate import MIGRATIONS, SchemaError, head, revision
from tweetforge.db.schema import metadata
from tweetforge.experiments.ab import list_experiments
from tweetforge.registry.versions import list_versions

LEGACY_SCHEMA = ROOT / "tests" / "data" / "schema_0_1_0.sqlite.sql"

LEGACY_ROWS = """
INSERT INTO imports (id, source, format, file_hash, started_at, duration_s, records, new, updated, unchanged, repeated, skipped, refused)
    VALUES (1, 'old.csv', 'csv', 'abc', '2026-11-01 10:00:00.000000', 0.5, 2, 2, 0, 0, 0, 0, 0);
INSERT INTO posts (network, post_id, author, text, created_at, is_retweet, reply_to, likes, reposts, language, first_import_id)
    VALUES ('twitter', '1', 'alice', 'The first post, from before migrations existed', '2020-01-01 09:00:00.000000', 0, NULL, 3, 1, 'en', 1),
           ('twitter', '2', 'alice', 'A second one, as it was stored then', '2020-01-02 09:00:00.000000', 0, NULL, NULL, NULL, NULL, 1);
INSERT INTO post_imports (network, post_id, import_id) VALUES ('twitter', '1', 1), ('twitter', '2', 1);
INSERT INTO model_versions (name, version, kind, path, base, dataset, dataset_hash, run_id, params, metrics, created_at)
    VALUES ('alice', 1, 'causal-lm', '/models/alice/1', 'base', 'alice-v1', 'hash', 'run-1', '{"authors": ["alice"]}', '{"steps": 10}',
            '2026-11-01 11:00:00.000000');
INSERT INTO model_aliases (name, alias, version, updated_at) VALUES ('alice', 'champion', 1, '2026-11-01 11:00:00.000000');
INSERT INTO experiments (name, metric, min_sample, alpha, auto_promote, status, created_at)
    VALUES ('alice-ab', 'like', 100, 0.05, 0, 'running', '2026-11-01 12:00:00.000000');
"""


def legacy_home(path: Path, skip_table: str | None = None) -> str:
    """A store as tweetforge 0.1.0 left it: its create_all schema (a frozen copy) and some rows, no version table."""
    url = f"sqlite:///{path}"
    statements = [s for s in LEGACY_SCHEMA.read_text().split(";") if s.strip()]
    if skip_table:
        statements = [s for s in statements if f"TABLE {skip_table} " not in s and f"ON {skip_table} " not in s]
    raw = create_engine(url)
    with raw.begin() as conn:
        for statement in statements + [s for s in LEGACY_ROWS.split(";") if s.strip()]:
            conn.exec_driver_sql(statement)
    raw.dispose()
    return url


def test_a_new_store_is_at_the_newest_revision_and_matches_the_migrations(tmp_path):
    """A new store is made from the table definitions and stamped; running the migrations from nothing
    must give exactly that schema, or the two ways of making a store have drifted apart."""
    engine = engine_for(f"sqlite:///{tmp_path / 'new.db'}")
    assert revision(engine) == head()

    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    migrated = create_engine(f"sqlite:///{tmp_path / 'migrated.db'}")
    with migrated.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
        # SQLite keeps no VARCHAR length (0002 widens post_id on PostgreSQL only); every other difference counts
        def same_but_length(context, inspected, declared, inspected_type, declared_type):  # type: ignore[no-untyped-def]
            from sqlalchemy import String, Text

            strings = [isinstance(t, String) and not isinstance(t, Text) for t in (inspected_type, declared_type)]
            return False if all(strings) else None

        context = MigrationContext.configure(conn, opts={"compare_type": same_but_length})
        assert compare_metadata(context, metadata) == []


def test_a_store_from_before_migrations_upgrades_itself_with_its_data(tmp_path):
    url = legacy_home(tmp_path / "old.db")
    engine = engine_for(url)
    assert revision(engine) == head()
    with engine.connect() as conn:
        frame = read_posts(conn, ["alice"])
    assert sorted(frame["text"].to_list()) == ["A second one, as it was stored then", "The first post, from before migrations existed"]
    assert [(v.ref, v.aliases) for v in list_versions(engine)] == [("alice:1", ["champion"])]
    assert [e.name for e in list_experiments(engine)] == ["alice-ab"]
    # and it takes new imports as any store does
    result = ingest(engine, open_source(str(shared("elonmusk_kaggle_2021.csv"))))
    assert result.new == 3115 and result.import_id == 2


def test_a_table_an_older_release_lacked_is_created(tmp_path):
    url = legacy_home(tmp_path / "older.db", skip_table="experiment_decisions")
    engine = engine_for(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM experiment_decisions")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM posts")).scalar() == 2


def test_a_store_written_by_a_newer_tweetforge_is_refused_by_name(tmp_path):
    engine = engine_for(f"sqlite:///{tmp_path / 'new.db'}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine_for.cache_clear()
    with pytest.raises(SchemaError, match="revision 9999.*newer tweetforge"):
        engine_for(f"sqlite:///{tmp_path / 'new.db'}")


def test_processes_opening_one_new_store_at_once_migrate_it_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    script = f"from tweetforge.db.engine import engine_for; engine_for({url!r})"
    workers = [subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    for worker in workers:
        assert worker.wait(timeout=120) == 0, worker.stderr.read()
    with create_engine(url).connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head()]


def test_db_current_and_upgrade_commands(tmp_path, monkeypatch):
    url = legacy_home(tmp_path / "old.db")
    monkeypatch.setenv("TWEETFORGE_DATABASE_URL", url)
    from tweetforge.config import get_settings

    get_settings.cache_clear()
    try:
        runner = CliRunner()
        before = runner.invoke(app, ["db", "current", "--json"])
        assert before.exit_code == 0, before.output
        assert '"current": null' in before.output and '"up_to_date": false' in before.output
        upgraded = runner.invoke(app, ["db", "upgrade"])
        assert upgraded.exit_code == 0 and f"upgraded from revision none to {head()}" in upgraded.output
        again = runner.invoke(app, ["db", "upgrade"])
        assert f"already at revision {head()}" in again.output
        assert "up to date" in runner.invoke(app, ["db", "current"]).output
    finally:
        get_settings.cache_clear()
