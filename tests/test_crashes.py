"""kill -9 at the worst instants of every stage that writes: afterwards nothing half-made is listed, version
numbers stay sane, and the same command run again finishes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from conftest import STORE_TABLES, run_cli, shared, table_dump
from tweetforge.db.engine import engine_for

KILLER = """
import importlib, os, re, signal, sys
module_name, _, attribute = os.environ.pop("KILL_AT").partition(":")
when = os.environ.pop("KILL_WHEN", "before")
pattern = re.compile(os.environ.pop("KILL_MATCH", ""))
skip = [int(os.environ.pop("KILL_SKIP", "0"))]
owner = importlib.import_module(module_name)
*parents, name = attribute.split(".")
for parent in parents:
    owner = getattr(owner, parent)
real = getattr(owner, name)
def dying(*args, **kwargs):
    if not pattern.search(repr(args)):
        return real(*args, **kwargs)
    if skip[0]:
        skip[0] -= 1
        return real(*args, **kwargs)
    if when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    if when == "during":  # half of what it would write, then death: a torn file
        result = real(*args, **kwargs)
        written = args[1]
        if not isinstance(written, (str, os.PathLike)):  # an open file
            written.flush()
            written = written.name
        os.truncate(written, os.path.getsize(written) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    result = real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
setattr(owner, name, dying)
sys.argv = ["tweetforge", *sys.argv[1:]]
from tweetforge.cli import app
app(prog_name="tweetforge")
"""


def killed(home: Path, at: str, *args: str, when: str = "before", match: str = "", skip: int = 0) -> None:
    """`tweetforge ARGS` killed with SIGKILL before (or after, or half-way through) the call `module:attribute`
    whose arguments match the pattern, once skip such calls went through."""
    env = {**os.environ, "TWEETFORGE_HOME": str(home), "KILL_AT": at, "KILL_WHEN": when, "KILL_MATCH": match, "KILL_SKIP": str(skip)}
    env.pop("TWEETFORGE_DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-c", KILLER, *args], capture_output=True, text=True, env=env, cwd=home.parent, timeout=300)
    assert done.returncode == -signal.SIGKILL, f"not killed at {at} ({done.returncode}):\n{done.stdout}\n{done.stderr}"


@pytest.fixture
def home(tmp_path):
    home = tmp_path / ".tweetforge"
    run_cli(home, "ingest", str(shared("elonmusk_kaggle_2021.csv")))
    return home


@pytest.mark.parametrize("at, when", [
    ("tweetforge.data.ingest:stage", "after"),            # half-way through reading
    ("tweetforge.data.ingest:merge_staged", "after"),     # merged, not committed
    ("tweetforge.data.ingest:record_refusals", "after"),  # the last step before the commit
])
def test_ingest_killed(home, at, when):
    engine = engine_for(f"sqlite:///{home / 'tweetforge.db'}")
    before = table_dump(engine, *STORE_TABLES)
    args = ("ingest", str(shared("trump_archive.csv")), "--author", "realDonaldTrump")
    killed(home, at, *args, when=when)
    assert table_dump(engine, *STORE_TABLES) == before
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    assert "Imported" in run_cli(home, *args).stdout
    assert len(json.loads(run_cli(home, "ingest", "list", "--json").stdout)) == 2


@pytest.mark.parametrize("at, when, match", [
    ("polars:DataFrame.write_parquet", "during", "data.parquet"),  # a torn parquet file in the staging folder
    ("os:replace", "before", r"/datasets/\.tmp-"),                  # complete, not yet renamed
    ("os:replace", "after", r"/datasets/\.tmp-"),                   # renamed, the row not committed
])
def test_dataset_create_killed(home, at, when, match):
    killed(home, at, "dataset", "create", "elon-v1", when=when, match=match)
    assert json.loads(run_cli(home, "dataset", "list", "--json").stdout) == []
    created = json.loads(run_cli(home, "dataset", "create", "elon-v1", "--json").stdout)
    assert created["posts"] > 1000 and Path(created["path"], "data.parquet").exists()
    assert [d.name for d in (home / "datasets").iterdir()] == ["elon-v1"]  # nothing left over


def train_args(base) -> list[str]:
    return ["train", "elon-v1", "--base", str(base), "--full", "--max-steps", "12", "--eval-every", "6", "--checkpoint-every", "4",
            "--report-to", "none", "--json"]


def test_training_killed_while_writing_a_checkpoint_resumes_from_the_one_before(home, tiny_gpt2):
    run_cli(home, "dataset", "create", "elon-v1")
    # the second checkpoint (step 8) torn half-way: the step-4 one, and its record, are what stays
    killed(home, "torch:save", *train_args(tiny_gpt2), when="during", match="checkpoint.pt.tmp", skip=1)
    (run_dir,) = home.glob("runs/*")
    assert json.loads((run_dir / "checkpoint.json").read_text())["step"] == 4
    resumed = json.loads(run_cli(home, *train_args(tiny_gpt2), "--resume").stdout)
    assert resumed["ref"] == "elon:1" and resumed["metrics"]["steps"] == 12


@pytest.mark.parametrize("at, when, match", [
    ("safetensors.torch:save_file", "during", ""),  # the weights torn in the staging folder
    ("os:replace", "before", r"/models/\.tmp-"),    # exported, not renamed
    ("os:replace", "after", r"/models/\.tmp-"),     # renamed, the row not committed
])
def test_registration_killed(home, tiny_gpt2, at, when, match):
    run_cli(home, "dataset", "create", "elon-v1")
    killed(home, at, *train_args(tiny_gpt2), when=when, match=match)
    assert json.loads(run_cli(home, "models", "list", "--json").stdout) == []
    resumed = run_cli(home, *train_args(tiny_gpt2), "--resume")  # the trained run is registered, not trained again
    (run_dir,) = home.glob("runs/*")
    assert f"Resuming run {run_dir.name}" in resumed.stderr
    first = json.loads(resumed.stdout)
    assert first["ref"] == "elon:1" and first["run_id"] == run_dir.name and first["metrics"]["steps"] == 12
    second = json.loads(run_cli(home, *train_args(tiny_gpt2)).stdout)
    assert second["ref"] == "elon:2"
    assert sorted(p.name for p in (home / "models" / "elon").iterdir()) == ["1", "2"]
    assert not [p for p in (home / "models").iterdir() if p.name.startswith(".")]


def test_evaluation_killed_leaves_the_version_whole(home, tiny_gpt2):
    run_cli(home, "dataset", "create", "elon-v1")
    run_cli(home, *train_args(tiny_gpt2))
    small = ("evaluate", "elon:1", "--samples", "8", "--max-test-posts", "40", "--report-to", "none", "--json")
    killed(home, "tweetforge.registry.versions:write_document", *small, when="before", match="README")
    shown = json.loads(run_cli(home, "models", "show", "elon:1", "--json").stdout)
    card = Path(shown["path"], "README.md").read_text()
    assert "elon:1" in card or "elon" in card
    json.loads(Path(shown["path"], "tweetforge.json").read_text())  # whole JSON, whatever the instant
    evaluated = json.loads(run_cli(home, *small).stdout)
    assert evaluated[0]["metrics"]["test_posts"] == 40
    assert f"{evaluated[0]['metrics']['bits_per_char']:.4f}" in Path(shown["path"], "README.md").read_text()
