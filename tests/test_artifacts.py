"""Datasets and models on object storage (TWEETFORGE_ARTIFACTS=s3://…): two machines sharing one store and one
bucket, a real S3-protocol server (moto's standalone server) on 127.0.0.1, and uploads killed half-way."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import free_port, run_cli, shared

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint():
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline and server.poll() is None, "moto's S3 server did not start"
            time.sleep(0.2)
    endpoint = f"http://127.0.0.1:{port}"
    previous = {k: os.environ.get(k) for k in [*S3_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(S3_ENV | {"AWS_ENDPOINT_URL": endpoint})  # for the test's own s3fs and in-process commands
    yield endpoint
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.kill()
    server.wait()


@pytest.fixture
def bucket(s3_endpoint, tmp_path):
    """A new bucket, and the environment two machines share: one database, one artifacts URL."""
    import s3fs

    name = f"tf-{uuid.uuid4().hex[:10]}"
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, key="testing", secret="testing")
    fs.mkdir(name)
    env = S3_ENV | {"AWS_ENDPOINT_URL": s3_endpoint, "TWEETFORGE_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}",
                    "TWEETFORGE_ARTIFACTS": f"s3://{name}/lake"}
    return fs, name, env


def objects(fs, root: str) -> list[str]:
    fs.invalidate_cache()
    return sorted(p.removeprefix(root + "/") for p in fs.find(root))


def train_args(base) -> list[str]:
    return ["--base", str(base), "--full", "--max-steps", "6", "--eval-every", "3", "--report-to", "none", "--json"]


def test_two_machines_share_datasets_and_models_through_the_bucket(bucket, tiny_gpt2, tmp_path):
    from transformers import pipeline

    fs, name, env = bucket
    first, second = tmp_path / "first" / ".tweetforge", tmp_path / "second" / ".tweetforge"
    run_cli(first, "ingest", str(shared("trump_archive.csv")), "--author", "realDonaldTrump", env=env)
    created = json.loads(run_cli(first, "dataset", "create", "trump-v1", "--json", env=env).stdout)
    assert created["path"].startswith(f"s3://{name}/lake/datasets/trump-v1/")
    trained = json.loads(run_cli(first, "train", "trump-v1", *train_args(tiny_gpt2), env=env).stdout)
    assert trained["ref"] == "trump:1" and trained["path"] == f"s3://{name}/lake/models/trump/1"

    stored = objects(fs, f"{name}/lake")
    snapshot_dir = created["path"].removeprefix(f"s3://{name}/lake/")
    assert {f"{snapshot_dir}/data.parquet", f"{snapshot_dir}/manifest.json", f"{snapshot_dir}/tweetforge-artifact.json"} <= set(stored)
    assert {"models/trump/1/README.md", "models/trump/1/tweetforge.json", "models/trump/1/tweetforge-artifact.json"} <= set(stored)
    assert any(p.startswith("models/trump/content/") and p.endswith("/model.safetensors") for p in stored)
    assert not (first / "datasets").exists() and not (first / "models").exists()  # nothing outside the cache

    # Another machine: same store and bucket, an empty data home. It downloads what it uses, checked, once.
    pulled = run_cli(second, "models", "pull", "trump:1", env=env).stdout.strip()
    assert pulled.startswith(str(second / "cache" / "artifacts"))
    generator = pipeline("text-generation", model=pulled)  # a plain Hugging Face directory
    assert generator("My dream is", max_new_tokens=5, do_sample=False)[0]["generated_text"].startswith("My dream is")
    small = ("--samples", "8", "--max-test-posts", "40", "--report-to", "none", "--json")
    evaluated = json.loads(run_cli(second, "evaluate", "trump:1", *small, env=env).stdout)
    assert evaluated[0]["metrics"]["test_posts"] == 40
    card = fs.cat_file(f"{name}/lake/models/trump/1/README.md").decode()
    assert f"{evaluated[0]['metrics']['bits_per_char']:.4f}" in card  # the card in the bucket has the evaluation
    again = json.loads(run_cli(second, "train", "trump-v1", *train_args(tiny_gpt2), env=env).stdout)
    assert again["ref"] == "trump:2" and again["path"] == f"s3://{name}/lake/models/trump/2"

    # The cache is used: with the model's weights gone from the bucket, both machines still generate.
    fs.rm(f"{name}/lake/models/trump/content", recursive=True)
    for home in (first, second):
        posts = json.loads(run_cli(home, "generate", "trump:1", "-n", "2", "--seed", "1", "--allow-copies", "--json", env=env).stdout)
        assert posts["model"] == "trump:1" and all(p["generated"] for p in posts["posts"])
    # A third machine cannot get the weights, and says so in one line.
    third = run_cli(tmp_path / "third" / ".tweetforge", "models", "pull", "trump:1", env=env, check=False)
    assert third.returncode == 1 and "downloading s3://" in third.stderr and "Traceback" not in third.stderr


def test_a_changed_object_is_refused(bucket, tiny_gpt2, tmp_path):
    fs, name, env = bucket
    home = tmp_path / "a" / ".tweetforge"
    run_cli(home, "ingest", str(shared("trump_archive.csv")), "--author", "realDonaldTrump", env=env)
    created = json.loads(run_cli(home, "dataset", "create", "trump-v1", "--json", env=env).stdout)
    data = created["path"].removeprefix("s3://") + "/data.parquet"
    fs.pipe_file(data, fs.cat_file(data) + b"tampered")
    refused = run_cli(tmp_path / "b" / ".tweetforge", "train", "trump-v1", *train_args(tiny_gpt2), env=env, check=False)
    assert refused.returncode == 1 and "data.parquet does not match its sha256" in refused.stderr


KILLER = """
import os, re, signal, sys
import s3fs
pattern = re.compile(os.environ.pop("KILL_BEFORE_WRITING"))
def killing(write):
    async def wrapped(self, *args, **kwargs):
        path = args[1] if write.__name__ == "_put_file" else args[0]
        if pattern.search(path):
            os.kill(os.getpid(), signal.SIGKILL)
        return await write(self, *args, **kwargs)
    return wrapped
s3fs.S3FileSystem._put_file = killing(s3fs.S3FileSystem._put_file)
s3fs.S3FileSystem._pipe_file = killing(s3fs.S3FileSystem._pipe_file)
sys.argv = ["tweetforge", *sys.argv[1:]]
from tweetforge.cli import app
app(prog_name="tweetforge")
"""


def killed_before(home, pattern: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    """`tweetforge ARGS`, killed with SIGKILL just before it writes the first object whose key matches pattern."""
    variables = {**os.environ, **env, "TWEETFORGE_HOME": str(home), "KILL_BEFORE_WRITING": pattern}
    home.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-c", KILLER, *args], capture_output=True, text=True, env=variables, cwd=home.parent)


def test_an_upload_killed_half_way_is_never_listed_and_the_command_run_again_finishes(bucket, tiny_gpt2, tmp_path):
    fs, name, env = bucket
    home = tmp_path / "m" / ".tweetforge"
    run_cli(home, "ingest", str(shared("trump_archive.csv")), "--author", "realDonaldTrump", env=env)

    killed = killed_before(home, r"/datasets/trump-v1/\w+/manifest\.json$", env, "dataset", "create", "trump-v1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    half = objects(fs, f"{name}/lake/datasets")
    assert any(p.endswith("/data.parquet") for p in half) and not any(p.endswith("tweetforge-artifact.json") for p in half)
    assert json.loads(run_cli(home, "dataset", "list", "--json", env=env).stdout) == []
    created = json.loads(run_cli(home, "dataset", "create", "trump-v1", "--json", env=env).stdout)
    assert fs.exists(created["path"].removeprefix("s3://") + "/tweetforge-artifact.json")

    # Killed in the middle of the weights, then after the content but before the version's own marker.
    for pattern in (r"/models/trump/content/\w+/model\.safetensors$", r"/models/trump/1/tweetforge-artifact\.json$"):
        killed = killed_before(home, pattern, env, "train", "trump-v1", *train_args(tiny_gpt2))
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert json.loads(run_cli(home, "models", "list", "--json", env=env).stdout) == []
        missing = run_cli(home, "models", "pull", "trump:1", env=env, check=False)
        assert missing.returncode == 1 and "no model named 'trump'" in missing.stderr
    trained = json.loads(run_cli(home, "train", "trump-v1", *train_args(tiny_gpt2), env=env).stdout)
    assert trained["ref"] == "trump:1"
    assert fs.exists(f"{name}/lake/models/trump/1/tweetforge-artifact.json")
    fresh = run_cli(tmp_path / "n" / ".tweetforge", "models", "pull", "trump:1", env=env).stdout.strip()
    assert (Path(fresh) / "model.safetensors").exists() and json.loads((Path(fresh) / "tweetforge.json").read_text())["ref"] == "trump:1"


def test_a_file_url_works_like_a_bucket(tiny_gpt2, tmp_path):
    lake = tmp_path / "lake"
    env = {"TWEETFORGE_ARTIFACTS": f"file://{lake}", "TWEETFORGE_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}"}
    home = tmp_path / "a" / ".tweetforge"
    run_cli(home, "ingest", str(shared("trump_archive.csv")), "--author", "realDonaldTrump", env=env)
    run_cli(home, "dataset", "create", "trump-v1", env=env)
    run_cli(home, "train", "trump-v1", *train_args(tiny_gpt2), env=env)
    assert (lake / "models" / "trump" / "1" / "tweetforge-artifact.json").exists()
    pulled = run_cli(tmp_path / "b" / ".tweetforge", "models", "pull", "trump:1", env=env).stdout.strip()
    assert (tmp_path / "b" / ".tweetforge" / "cache") in Path(pulled).parents


def test_an_unknown_filesystem_is_one_line(tmp_path):
    env = {"TWEETFORGE_ARTIFACTS": "nosuchfs://bucket/x", "TWEETFORGE_DATABASE_URL": f"sqlite:///{tmp_path / 'db.db'}"}
    home = tmp_path / ".tweetforge"
    run_cli(home, "ingest", str(shared("trump_archive.csv")), "--author", "realDonaldTrump", env=env)
    refused = run_cli(home, "dataset", "create", "trump-v1", env=env, check=False)
    assert refused.returncode == 1 and "artifacts URL nosuchfs://bucket/x" in refused.stderr
    assert json.loads(run_cli(home, "dataset", "list", "--json", env=env).stdout) == []
