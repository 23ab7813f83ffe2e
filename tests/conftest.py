from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import polars as pl
import pytest
import torch
from sqlalchemy import text

from tweetforge.data.ingest import ingest
from tweetforge.data.snapshots import SnapshotRequest, create_snapshot
from tweetforge.data.sources import ReadOptions, open_source
from tweetforge.db.engine import engine_for
from tweetforge.evaluation.evaluate import EvalSettings
from tweetforge.training.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DO_NOT_TRACK", "1")


def shared(name: str) -> Path:
    """A real export from ../shared/data; CI always has them, so a missing one fails the test."""
    path = SHARED / name
    assert path.exists(), f"test data {path} is missing"
    return path


@pytest.fixture
def engine(tmp_path):
    return engine_for(f"sqlite:///{tmp_path / 'store.db'}")


def table_dump(engine, *tables: str) -> dict[str, list]:
    """Every row of the given tables, to prove a failed import changed nothing."""
    with engine.connect() as conn:
        return {t: sorted(map(tuple, conn.execute(text(f"SELECT * FROM {t}")).all()), key=repr) for t in tables}


STORE_TABLES = ("posts", "post_imports", "post_history", "imports", "import_skips")


def run_cli(home: Path, *args: str, check: bool = True, in_subprocess: bool = False,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`tweetforge ARGS` with TWEETFORGE_HOME=home, from home's parent folder. In-process through Typer's
    CliRunner (an exception other than the one-line errors fails the test); in_subprocess runs the
    installed command, for the tour and for tests that kill it. env: more variables (a database URL, artifacts)."""
    home.parent.mkdir(parents=True, exist_ok=True)
    if in_subprocess:
        variables = {**os.environ, "TWEETFORGE_HOME": str(home), "COLUMNS": "200"}
        variables.pop("TWEETFORGE_DATABASE_URL", None)
        result = subprocess.run([sys.executable, "-m", "tweetforge", *args], capture_output=True, text=True, env=variables | (env or {}),
                                cwd=home.parent)
    else:
        from typer.testing import CliRunner

        from tweetforge.cli import app
        from tweetforge.config import get_settings

        cwd = os.getcwd()
        os.chdir(home.parent)
        get_settings.cache_clear()
        try:
            invoked = CliRunner().invoke(app, list(args), env={"TWEETFORGE_HOME": str(home), "TWEETFORGE_DATABASE_URL": None, **(env or {})},
                                         catch_exceptions=False)
        finally:
            os.chdir(cwd)
            get_settings.cache_clear()
        result = subprocess.CompletedProcess(args, invoked.exit_code, invoked.stdout, invoked.stderr)
    if check and result.returncode != 0:
        raise AssertionError(f"tweetforge {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def ytd(name: str, items: list) -> str:
    return f"window.YTD.{name}.part0 = " + json.dumps(items, indent=2)


def archive_tweet(id_str: str, text: str, created_at: str = "Wed Oct 10 20:19:24 +0000 2018", **extra) -> dict:
    return {
        "tweet": {
            "id_str": id_str,
            "id": id_str,
            "created_at": created_at,
            "full_text": text,
            "favorite_count": "12",
            "retweet_count": "3",
            "retweeted": False,
            "lang": "en",
            **extra,
        }
    }


def make_archive(path: Path, username: str, parts: list[list[dict]], as_zip: bool = True) -> Path:
    """An X archive as X ships it: data/account.js and data/tweets.js, data/tweets-part1.js, ..."""
    files = {"data/account.js": ytd("account", [{"account": {"username": username, "accountId": "1"}}])}
    for n, tweets in enumerate(parts):
        name = "data/tweets.js" if n == 0 else f"data/tweets-part{n}.js"
        files[name] = ytd("tweets", tweets).replace("part0", f"part{n}")
    if as_zip:
        with zipfile.ZipFile(path, "w") as z:
            for name, content in files.items():
                z.writestr(name, content)
    else:
        for name, content in files.items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_text(content)
    return path


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory):
    """A GPT-2 of 2 layers, 64 wide, with a BPE vocabulary learned from real tweets, saved with
    save_pretrained so that training goes through the real from_pretrained path."""
    import polars as pl
    from transformers import GPT2Config, GPT2LMHeadModel

    from tweetforge.training.models.tokenizers import train_bpe_tokenizer

    directory = tmp_path_factory.mktemp("tiny-gpt2")
    texts = pl.read_csv(shared("trump_archive.csv"))["text"].to_list()
    tokenizer = train_bpe_tokenizer(texts, 2000)
    assert len(tokenizer) == 2000
    config = GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=len(tokenizer), n_positions=256,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, tiny_gpt2):
    """A Llama of 4 layers, 64 wide (rotary positions, grouped-query attention, tied embeddings like
    SmolLM2), with tiny_gpt2's tokenizer, saved with save_pretrained."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    directory = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=160, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True, initializer_range=0.3,
                         bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    """A home with Trump's archive and Musk's 2021 tweets, and two snapshots: one author, and both."""
    home = tmp_path_factory.mktemp("home")
    engine = engine_for(f"sqlite:///{home / 'tweetforge.db'}")
    ingest(engine, open_source(str(shared("trump_archive.csv")), None, ReadOptions(author="realDonaldTrump")))
    ingest(engine, open_source(str(shared("elonmusk_kaggle_2021.csv"))))
    trump = create_snapshot(engine, home / "datasets", SnapshotRequest("trump-v1", ("realDonaldTrump",)))
    both = create_snapshot(engine, home / "datasets", SnapshotRequest("both-v1"))
    return home, engine, trump, both


def quick(base, **overrides) -> TrainConfig:
    settings = dict(dataset="trump-v1", base=str(base), max_steps=30, eval_every=10, checkpoint_every=10, batch_size=8,
                    block_size=32, precision="fp32", report_to="none", seed=1)
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="session")
def trump_texts():
    return pl.read_csv(shared("trump_archive.csv"))["text"].to_list()


@pytest.fixture(scope="session")
def musk_texts():
    return [t for t in pl.read_csv(shared("elonmusk_kaggle_2021.csv"))["tweet"].to_list() if len(t.split()) >= 3]


@pytest.fixture(scope="session")
def trained(tiny_gpt2, store):
    """Two versions of one name: a barely trained one and a better one."""
    from tweetforge.registry.versions import register
    from tweetforge.training.train import train

    home, engine, trump, _ = store
    weak = register(engine, home / "models", train(quick(tiny_gpt2, full=True, max_steps=3, name="tiny-eval"), trump, home), trump)
    strong_config = quick(tiny_gpt2, full=True, max_steps=60, learning_rate=3e-3, name="tiny-eval")
    strong = register(engine, home / "models", train(strong_config, trump, home), trump)
    return weak, strong


SMALL_EVAL = EvalSettings(samples=24, seed=3, max_test_posts=120)
"""Evaluation settings small enough for tiny models in tests."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    """Until `tweetforge serve` at url answers /readyz with 200; fails with the end of its log if it dies or
    takes more than two minutes."""
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, f"serve stopped:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready:\n{log.read_text()[-3000:]}")


class LiveServer:
    """uvicorn serving an app on a free loopback port, in a thread of the test process."""

    def __init__(self, app):  # type: ignore[no-untyped-def]
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start within 60 s"
            time.sleep(0.05)
        return self

    def __exit__(self, *_) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
