"""A data home on a small filesystem that fills up in the middle of ingest, a snapshot, training or
registration: one line saying the disk is full and where, nothing corrupt, and the same command works once
space is freed. The filesystem is a real tmpfs of a few megabytes (mounting needs root, as in CI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from conftest import STORE_TABLES, run_cli, shared, table_dump
from tweetforge.db.engine import engine_for


@pytest.fixture
def disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a small tmpfs needs root: {mounted.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


FILLER = """
import importlib, os, sys
module_name, _, attribute = os.environ.pop("FILL_AT").partition(":")
disk = os.environ.pop("FILL_DISK")
module = importlib.import_module(module_name)
real = getattr(module, attribute)
def filling(*args, **kwargs):
    stat = os.statvfs(disk)
    with open(os.path.join(disk, "filler"), "ab") as f:
        os.posix_fallocate(f.fileno(), 0, stat.f_bavail * stat.f_frsize + os.path.getsize(f.name))
    return real(*args, **kwargs)
setattr(module, attribute, filling)
sys.argv = ["tweetforge", *sys.argv[1:]]
from tweetforge.cli import app
app(prog_name="tweetforge")
"""


def filled_during(disk: Path, at: str, *args: str) -> subprocess.CompletedProcess:
    """`tweetforge ARGS` with its data home on disk, which fills up just before the call `module:attribute`."""
    env = {**os.environ, "TWEETFORGE_HOME": str(disk / ".tweetforge"), "FILL_AT": at, "FILL_DISK": str(disk)}
    env.pop("TWEETFORGE_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-c", FILLER, *args], capture_output=True, text=True, env=env, cwd=disk, timeout=300)


def assert_disk_full(done: subprocess.CompletedProcess, disk: Path) -> None:
    assert done.returncode == 1, f"{done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    error = done.stderr.strip().splitlines()[-1]  # after the progress lines
    assert error.startswith(("Error: the disk is full writing ", "Error: the disk holding the store ")) and str(disk) in error, error


def test_ingest_on_a_full_disk(disk):
    home = disk / ".tweetforge"
    run_cli(home, "ingest", str(shared("elonmusk_kaggle_2021.csv")))
    engine = engine_for(f"sqlite:///{home / 'tweetforge.db'}")
    before = table_dump(engine, *STORE_TABLES)
    args = ("ingest", str(shared("trump_archive.csv")), "--author", "realDonaldTrump")
    done = filled_during(disk, "tweetforge.data.ingest:merge_staged", *args)
    assert_disk_full(done, disk)
    assert str(home / "tweetforge.db") in done.stderr
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    assert table_dump(engine, *STORE_TABLES) == before
    (disk / "filler").unlink()
    assert "Imported" in run_cli(home, *args).stdout


def test_dataset_create_on_a_full_disk(disk):
    home = disk / ".tweetforge"
    run_cli(home, "ingest", str(shared("elonmusk_kaggle_2021.csv")))
    assert_disk_full(filled_during(disk, "tweetforge.data.snapshots:content_hash", "dataset", "create", "elon-v1"), disk)
    assert json.loads(run_cli(home, "dataset", "list", "--json").stdout) == []
    (disk / "filler").unlink()
    created = json.loads(run_cli(home, "dataset", "create", "elon-v1", "--json").stdout)
    assert Path(created["path"], "data.parquet").exists()
    assert [p.name for p in (home / "datasets").iterdir()] == ["elon-v1"]


def train_args(base) -> list[str]:
    return ["train", "elon-v1", "--base", str(base), "--full", "--max-steps", "8", "--eval-every", "4", "--checkpoint-every", "4",
            "--report-to", "none", "--json"]


@pytest.mark.parametrize("at", ["tweetforge.training.train:save_checkpoint", "tweetforge.registry.versions:register"])
def test_training_and_registration_on_a_full_disk(disk, tiny_gpt2, at):
    home = disk / ".tweetforge"
    run_cli(home, "ingest", str(shared("elonmusk_kaggle_2021.csv")))
    run_cli(home, "dataset", "create", "elon-v1")
    assert_disk_full(filled_during(disk, at, *train_args(tiny_gpt2)), disk)
    assert json.loads(run_cli(home, "models", "list", "--json").stdout) == []
    (disk / "filler").unlink()
    # a run the disk stopped at a checkpoint starts again; one stopped at registration is only registered
    again = ("--resume",) if at.endswith(":register") else ()
    trained = json.loads(run_cli(home, *train_args(tiny_gpt2), *again).stdout)
    assert trained["ref"] == "elon:1" and (home / "models" / "elon" / "1" / "model.safetensors").exists()
    assert len(list(home.glob("runs/*"))) == 1 + (not again)
    assert not [p for p in (home / "models").iterdir() if p.name.startswith(".")]
