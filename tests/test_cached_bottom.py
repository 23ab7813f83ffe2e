"""Training only the top layers with the frozen bottom's outputs cached: the same losses and weights as
running the whole model every step, resume included, and the export stays a plain merged model."""

from __future__ import annotations

import pytest
import torch

import tweetforge.training.train as train_module
from conftest import quick
from tweetforge.data.snapshots import SnapshotRequest, create_snapshot
from tweetforge.training.train import TrainingError, find_resumable_run, train


@pytest.fixture(scope="module")
def small(store):
    """150 posts: about 20 steps an epoch, so a short run goes through the cache in later epochs."""
    home, engine, _, _ = store
    return home, create_snapshot(engine, home / "datasets", SnapshotRequest("trump-small", ("realDonaldTrump",), limit=150))


def top_config(base, **overrides):  # type: ignore[no-untyped-def]
    settings = dict(dataset="trump-small", train_layers=2, epochs=3, max_steps=45, eval_every=15, checkpoint_every=10, learning_rate=1e-2)
    return quick(base, **(settings | overrides))


def test_the_cached_bottom_gives_the_same_losses_and_weights_as_the_whole_model(tiny_llama, small, monkeypatch):
    home, snapshot = small
    made = []
    real_cache_bottom = train_module.cache_bottom
    monkeypatch.setattr(train_module, "cache_bottom", lambda *a: made.append(real_cache_bottom(*a)) or made[-1])
    cached = train(top_config(tiny_llama, name="tiny-cached"), snapshot, home)
    cache = made[0]
    steps_per_epoch = -(-len(cache.train_blocks) // 8)
    assert steps_per_epoch < 23 and cache.cached.all()  # every block cached once; the later epochs ran on the cache
    assert len(cache.validation) > 0
    monkeypatch.setattr(train_module, "can_cache", lambda model: False)
    whole = train(top_config(tiny_llama, name="tiny-whole"), snapshot, home)

    assert [h["step"] for h in cached.state.history] == [15, 30, 45]
    for a, b in zip(cached.state.history, whole.state.history):
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5) and a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
    assert cached.state.history[-1]["val_loss"] < cached.state.history[0]["val_loss"] - 0.05  # it learns
    for (name, a), (_, b) in zip(cached.model.state_dict().items(), whole.model.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-5), name


@pytest.mark.parametrize("modules", ["attention", "attention+mlp"])
def test_only_the_top_layers_get_adapters_and_the_merge_is_exact(tiny_llama, small, modules):
    home, snapshot = small
    result = train(top_config(tiny_llama, name="tiny-top", max_steps=5, eval_every=5, lora_modules=modules), snapshot, home)
    adapted = {n.split(".layers.")[1].split(".lora_")[0] for n, p in result.model.named_parameters() if p.requires_grad and "lora_" in n}
    assert {int(a.split(".")[0]) for a in adapted} == {2, 3}
    projections = {a.split(".")[-1] for a in adapted}
    assert projections == {"q_proj", "k_proj", "v_proj", "o_proj"} | ({"gate_proj", "up_proj", "down_proj"} if modules != "attention" else set())
    ids = torch.tensor([[result.tokenizer.eos_token_id, 17, 95, 230, 11]])
    with torch.no_grad():
        before = result.model(input_ids=ids).logits
        from tweetforge.training.models.causal_lm import unwrap_for_export

        after = unwrap_for_export(result.model)(input_ids=ids).logits
    assert torch.allclose(before, after, atol=1e-5)


def test_resume_with_a_cache_reaches_the_same_weights(tiny_llama, small):
    """Killed in the second epoch: the resumed run rebuilds the cache from the first epoch's batches."""
    home, snapshot = small
    config = top_config(tiny_llama, name="tiny-cache-resume")
    straight = train(config, snapshot, home)

    class Killed(Exception):
        pass

    def kill_at_step_27(event):  # type: ignore[no-untyped-def]
        if event["phase"] == "step" and event["step"] == 27:
            raise Killed

    with pytest.raises(Killed):
        train(config, snapshot, home, progress=kill_at_step_27)
    resumed = train(config, snapshot, home, run_dir=find_resumable_run(home, "tiny-cache-resume"), resume=True)
    assert resumed.state.step == 45
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_train_layers_is_checked(tiny_llama, small):
    home, snapshot = small
    with pytest.raises(TrainingError, match="--lora-modules 'mlp': use attention or attention\\+mlp"):
        train(top_config(tiny_llama, name="tiny-bad", lora_modules="mlp"), snapshot, home)
    with pytest.raises(TrainingError, match="--train-layers -1: use a number of layers, or 0 for every layer"):
        train(top_config(tiny_llama, name="tiny-bad", train_layers=-1), snapshot, home)
    every = train(top_config(tiny_llama, name="tiny-every", train_layers=9, max_steps=2), snapshot, home)  # more than it has: all 4
    assert every.config.train_layers == 0
    assert {int(n.split(".layers.")[1].split(".")[0]) for n, p in every.model.named_parameters() if "lora_" in n} == {0, 1, 2, 3}
