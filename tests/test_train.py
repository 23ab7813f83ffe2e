"""Training and export on tiny models built from configs (never downloaded): every model kind, LoRA, control
tokens, resume, continue, and the command line."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from conftest import quick, run_cli, shared
from tweetforge.data.snapshots import SnapshotRequest, create_snapshot
from tweetforge.generation.generate import (
    load_model,
)
from tweetforge.registry.versions import (
    register,
    resolve,
)
from tweetforge.training.models.base import BaseModelError, resolve_base
from tweetforge.training.models.causal_lm import (
    LoraSettings,
    load_pretrained,
    unwrap_for_export,
)
from tweetforge.training.train import TrainingError, train


def test_full_fine_tune_lowers_validation_loss_and_exports_for_stock_transformers(tiny_gpt2, store, tmp_path):
    home, engine, trump, _ = store
    result = train(quick(tiny_gpt2, full=True, max_steps=60, learning_rate=3e-3, name="tiny-full"), trump, home)
    history = result.state.history
    assert history[-1]["val_loss"] < history[0]["val_loss"] - 0.3
    version = register(engine, home / "models", result, trump)
    assert version.ref == "tiny-full:1" and version.metrics["val_perplexity"] == pytest.approx(math.exp(version.metrics["val_loss"]))
    card = (version.path / "README.md").read_text()
    assert "@realDonaldTrump" in card and "machine-generated" in card and f"{version.metrics['val_perplexity']:.2f}" in card
    assert (version.path / "training_curve.png").stat().st_size > 5000
    generation_config = json.loads((version.path / "generation_config.json").read_text())
    assert generation_config["do_sample"] is True and generation_config["top_p"] == 0.95
    assert generation_config["eos_token_id"] == result.tokenizer.eos_token_id

    script = (
        "import sys\n"
        "from transformers import pipeline\n"
        f"generator = pipeline('text-generation', model={str(version.path)!r})\n"
        "out = generator('Make America', max_new_tokens=8, do_sample=False)\n"
        "assert not any(m.startswith('tweetforge') for m in sys.modules), 'tweetforge was imported'\n"
        "print(out[0]['generated_text'])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("Make America")


def test_lora_merge_gives_the_same_logits(tiny_gpt2):
    model, tokenizer = load_pretrained(tiny_gpt2, ["<|@a|>", "<|@b|>"], LoraSettings(r=4, alpha=8), frozen_bf16=False)
    with torch.no_grad():  # make the adapters and the new token rows non-trivial
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.05)
    ids = torch.tensor([[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|@b|>")] + tokenizer("We will win big").input_ids])
    model.eval()
    with torch.no_grad():
        before = model(input_ids=ids).logits
        after = unwrap_for_export(model)(input_ids=ids).logits
    assert torch.allclose(before, after, atol=1e-4)


@pytest.mark.parametrize("kind", ["lstm", "scratch"])
def test_lstm_and_scratch_round_trip(kind, store):
    home, engine, trump, _ = store
    result = train(quick(kind, layers=2, width=64, name=f"tiny-{kind}", learning_rate=3e-3), trump, home)
    assert result.state.history[-1]["val_loss"] < result.state.history[0]["val_loss"]
    version = register(engine, home / "models", result, trump)
    assert version.kind == kind and len(result.tokenizer) <= 8000
    reloaded, tokenizer, info = load_model(str(version.path))
    assert info["kind"] == kind and len(tokenizer) == len(result.tokenizer)
    ids = torch.tensor([tokenizer("The economy is doing great").input_ids])
    result.model.eval()
    with torch.no_grad():
        assert torch.allclose(result.model(input_ids=ids).logits, reloaded(input_ids=ids).logits, atol=1e-5)


def test_multi_author_control_tokens_condition_the_model(store):
    home, engine, _, both = store
    result = train(quick("scratch", dataset="both-v1", layers=2, width=128, vocab_size=1000, max_steps=400, eval_every=100,
                         learning_rate=3e-3, name="tiny-both"), both, home)
    assert result.multi_author and result.authors == ["elonmusk", "realDonaldTrump"]
    model, tokenizer = result.model.eval(), result.tokenizer
    import polars as pl

    from tweetforge.data.snapshots import read_snapshot
    from tweetforge.training.models.tokenizers import author_token

    test = read_snapshot(both, "test")

    def first_token_log_likelihood(posts: pl.DataFrame, as_author: str) -> float:
        """Mean log-probability of how each held-out post starts, after [end-of-post, author token]."""
        firsts = torch.tensor([tokenizer(t, add_special_tokens=False).input_ids[0] for t in posts["text"].to_list()])
        ids = torch.tensor([[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(author_token(as_author))]])
        with torch.no_grad():
            log_probs = model(input_ids=ids).logits[0, -1].log_softmax(-1)
        return log_probs[firsts].mean().item()

    for author, other in (("elonmusk", "realDonaldTrump"), ("realDonaldTrump", "elonmusk")):
        mine = test.filter(pl.col("author") == author)
        # a post is likelier to start the way it does under its own author's token than under the other's
        assert first_token_log_likelihood(mine, author) > first_token_log_likelihood(mine, other) + 0.2


def test_resume_after_a_kill_reaches_the_same_weights(tiny_gpt2, store):
    home, _, trump, _ = store
    config = quick(tiny_gpt2, full=True, max_steps=24, checkpoint_every=5, name="tiny-resume")
    straight = train(config, trump, home)

    class Killed(Exception):
        pass

    def kill_at_step_13(event):
        if event["phase"] == "step" and event["step"] == 13:
            raise Killed

    with pytest.raises(Killed):
        train(config, trump, home, progress=kill_at_step_13)
    from tweetforge.training.train import find_resumable_run

    run_dir = find_resumable_run(home, "tiny-resume")
    assert json.loads((run_dir / "checkpoint.json").read_text())["step"] == 10
    resumed = train(config, trump, home, run_dir=run_dir, resume=True)
    assert resumed.state.step == straight.state.step == 24
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert [h["step"] for h in resumed.state.history] == [h["step"] for h in straight.state.history]


def test_a_time_budget_ends_the_run_annealed(tiny_gpt2, store):
    """The budget, not the (far larger) step count, decides where the cosine ends: the last steps run at
    the bottom of the schedule and the run stops on time with its model validated."""
    home, _, trump, _ = store
    config = quick(tiny_gpt2, max_steps=None, epochs=10_000.0, max_minutes=0.05, eval_every=10**6, learning_rate=1e-3,
                   name="tiny-budget")
    result = train(config, trump, home)
    state = result.state
    assert state.stopped_because == "time budget of 0.05 minutes reached"
    assert 3.0 <= state.seconds < 6.0
    assert state.step > 10
    final = state.history[-1]
    assert final["step"] == state.step and final["lr"] < 1e-3 * (config.min_lr_ratio + 0.05)
    from tweetforge.training.train import learning_rate_at

    assert learning_rate_at(500, 1000, 1.0, 0.05, 0.1, budget_used=0.0) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 450 / 950)))
    assert learning_rate_at(500, 1000, 1.0, 0.05, 0.1, budget_used=0.5) == pytest.approx(0.55)


def test_corrupt_checkpoint_is_named_and_refused(tiny_gpt2, store):
    home, _, trump, _ = store
    config = quick(tiny_gpt2, full=True, max_steps=12, checkpoint_every=5, name="tiny-corrupt")

    def kill(event):
        if event["phase"] == "step" and event["step"] == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, trump, home, progress=kill)
    from tweetforge.training.train import find_resumable_run

    run_dir = find_resumable_run(home, "tiny-corrupt")
    checkpoint = run_dir / "checkpoint.pt"
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    with pytest.raises(TrainingError, match=rf"checkpoint {checkpoint} is corrupt: its sha256 does not match .* step 5"):
        train(config, trump, home, run_dir=run_dir, resume=True)


def test_bad_training_inputs(store, tmp_path, monkeypatch):
    home, engine, trump, _ = store
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BaseModelError, match="unknown base model 'no-such/model'.*offline"):
        resolve_base("no-such/model", tmp_path)
    with pytest.raises(BaseModelError, match="does not exist"):
        resolve_base("./missing-dir", tmp_path)
    no_train = create_snapshot(engine, home / "datasets", SnapshotRequest("no-train", ("realDonaldTrump",), fractions=(0.0, 0.5, 0.5)))
    with pytest.raises(TrainingError, match="no-train has no training posts"):
        train(quick("scratch", dataset="no-train"), no_train, home)
    with pytest.raises(TrainingError, match="fewer than one batch of 4096"):
        train(quick("scratch", batch_size=4096), trump, home)


def test_cli_train_models_generate(tiny_gpt2, tmp_path):
    home = tmp_path / ".tweetforge"
    run_cli(home, "ingest", str(shared("trump_archive.csv")), "--author", "realDonaldTrump")
    run_cli(home, "dataset", "create", "trump-v1")
    out = run_cli(home, "train", "trump-v1", "--base", str(tiny_gpt2), "--max-steps", "12", "--eval-every", "6", "--json")
    trained = json.loads(out.stdout)
    assert trained["ref"] == "trump:1" and trained["metrics"]["steps"] == 12
    assert (home / "trackio").is_dir()  # tracked with trackio by default
    run_cli(home, "models", "alias", "trump:1", "champion")
    listed = json.loads(run_cli(home, "models", "list", "--json").stdout)
    assert listed[0]["aliases"] == ["champion"]
    generation = json.loads(run_cli(home, "generate", "trump", "--prompt", "My dream is", "-n", "3", "--seed", "7", "--json").stdout)
    posts = generation["posts"]
    assert generation["copy_filter"] is True and generation["model"] == "trump:1"
    assert len(posts) + generation["dropped"] == 3 and {"text", "model", "version", "seed"} <= set(posts[0])
    assert all(p["generated"] is True and p["text"].startswith("My dream is") for p in posts)
    small = ("--samples", "12", "--max-test-posts", "60", "--report-to", "none")
    evaluated = json.loads(run_cli(home, "evaluate", "trump:1", *small, "--json").stdout)
    assert [e["subject"] for e in evaluated] == ["trump:1", "markov", f"base:{tiny_gpt2}"]
    assert evaluated[0]["metrics"]["test_posts"] == 60 and 0 <= evaluated[0]["metrics"]["copy_rate"] <= 1
    shown = run_cli(home, "models", "show", "trump:1").stdout
    assert f"bits_per_char={evaluated[0]['metrics']['bits_per_char']:.4g}" in shown
    compared = run_cli(home, "compare", "trump:1", "markov", *small, "--plot", str(tmp_path / "compare.png")).stdout
    assert "bits per char" in compared and "markov" in compared and (tmp_path / "compare.png").stat().st_size > 20_000
    again = run_cli(home, "promote", "trump:1", check=False)
    assert again.returncode == 1 and "trump:1 is already trump:champion" in again.stderr
    assert "No promotions yet" in run_cli(home, "promotions").stdout
    run_cli(home, "ab", "create", "exp", "--variant", "a=trump:1:50", "--variant", "b=trump:champion:50", "--min-sample", "10")
    status = run_cli(home, "ab", "status", "exp", "--plot", str(tmp_path / "ab.png")).stdout
    assert "collecting" in status and "no exposures yet" in status and (tmp_path / "ab.png").exists()
    refused = run_cli(home, "ab", "promote", "exp", check=False)
    assert refused.returncode == 1 and "exp has no winner yet" in refused.stderr
    assert "trump:champion → trump:1 (variant a of exp)" in run_cli(home, "ab", "promote", "exp", "--variant", "a").stdout
    assert json.loads(run_cli(home, "ab", "list", "--json").stdout)[0]["status"] == "decided"
    missing = run_cli(home, "train", "trump-v1", "--base", "no-such/model", check=False)
    assert missing.returncode == 1 and "unknown base model 'no-such/model'" in missing.stderr


def test_continue_a_registered_model_on_newer_data(tiny_gpt2, store):
    home, engine, trump, both = store
    first_config = quick(tiny_gpt2, full=True, max_steps=40, learning_rate=3e-3, name="tiny-cont")
    first = register(engine, home / "models", train(first_config, trump, home), trump)
    config = quick(tiny_gpt2, dataset="both-v1", from_model="tiny-cont:1", full=True, max_steps=20, learning_rate=3e-3, name="tiny-cont")
    continued = train(config, both, home, resolve_from=lambda ref: resolve(engine, ref).path)
    assert "registered model tiny-cont:1" in continued.base_description
    second = register(engine, home / "models", continued, both)
    assert second.ref == "tiny-cont:2" and second.params["from_model"] == "tiny-cont:1" and second.dataset == "both-v1"
    # it starts from the first version's weights: after 10 steps it is ahead of the untrained base after 10 steps
    fresh = train(quick(tiny_gpt2, dataset="both-v1", full=True, max_steps=10, learning_rate=3e-3, name="tiny-fresh"), both, home)
    assert continued.state.history[0]["step"] == fresh.state.history[0]["step"] == 10
    assert continued.state.history[0]["val_loss"] < fresh.state.history[0]["val_loss"]
    # two authors now: their control tokens were added to the first version's vocabulary
    assert second.params["multi_author"] and len(continued.tokenizer) == len(load_model(str(first.path))[1]) + 2


def test_cli_resume_after_sigkill(tiny_gpt2, tmp_path):
    import os
    import signal
    import time

    home = tmp_path / ".tweetforge"
    run_cli(home, "ingest", str(shared("trump_archive.csv")), "--author", "realDonaldTrump")
    run_cli(home, "dataset", "create", "trump-v1")
    args = ["train", "trump-v1", "--base", str(tiny_gpt2), "--full", "--max-steps", "120", "--eval-every", "60",
            "--checkpoint-every", "5", "--report-to", "none", "--json"]
    env = {**os.environ, "TWEETFORGE_HOME": str(home)}
    process = subprocess.Popen([sys.executable, "-m", "tweetforge", *args], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not list(home.glob("runs/*/checkpoint.json")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (run_dir,) = home.glob("runs/*")
    assert (run_dir / "status").read_text() == "running"
    killed_at = json.loads((run_dir / "checkpoint.json").read_text())["step"]
    assert 0 < killed_at < 120
    resumed = run_cli(home, *args[:-1], "--resume", "--json")
    assert f"Resuming run {run_dir.name}" in resumed.stderr
    assert json.loads(resumed.stdout)["metrics"]["steps"] == 120
    assert (run_dir / "status").read_text() == "finished"
