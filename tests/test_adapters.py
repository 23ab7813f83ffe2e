"""Every LoRA version keeps its unmerged adapter and the identity of its base: loaded back with peft on the
base it gives the merged export's outputs, for one author, for control tokens, and along a --from chain."""

from __future__ import annotations

import shutil

import pytest
import torch

from conftest import quick
from tweetforge.evaluation.evaluate import score_texts
from tweetforge.generation.generate import load_model
from tweetforge.registry.adapters import AdapterError, load_adapted
from tweetforge.registry.versions import register, resolve
from tweetforge.training.models.tokenizers import author_token
from tweetforge.training.train import train

TEXTS = ["Make America great again!", "The fake news media is working overtime.", "Thank you Ohio, see you soon."]


def same_outputs(version, atol: float = 1e-4) -> None:
    """Logits on the test texts, and their bits per char, as the merged export gives them."""
    merged, tokenizer, _ = load_model(str(version.path))
    adapted, adapted_tokenizer = load_adapted(version.path, version.params["adapter"])
    assert len(adapted_tokenizer) == len(tokenizer)
    ids = tokenizer(TEXTS[0], return_tensors="pt")["input_ids"]
    if version.params["multi_author"]:  # the control tokens' trained rows take part
        controls = tokenizer.convert_tokens_to_ids([author_token(a) for a in version.params["authors"]])
        ids = torch.cat([torch.tensor([controls]), ids], dim=1)
    with torch.no_grad():
        difference = (merged(input_ids=ids).logits - adapted(input_ids=ids).logits).abs().max().item()
        assert difference < atol, difference
    prefixes = [[tokenizer.eos_token_id]] * len(TEXTS)
    assert score_texts(adapted, tokenizer, TEXTS, prefixes).bits_per_character == pytest.approx(
        score_texts(merged, tokenizer, TEXTS, prefixes).bits_per_character, abs=1e-4)


def test_a_lora_version_keeps_an_adapter_that_equals_its_merged_export(tiny_llama, store):
    home, engine, trump, _ = store
    version = register(engine, home / "models", train(quick(tiny_llama, train_layers=2, learning_rate=1e-2, name="adapt-one"), trump, home),
                       trump)
    adapter = version.params["adapter"]
    assert adapter["base_path"] == str(tiny_llama) and len(adapter["base_sha256"]) == 64
    assert adapter["rank"] == 16 and adapter["chain_ranks"] == [16] and not adapter["control_tokens"]
    assert (version.path / "adapter" / "adapter_model.safetensors").exists() and adapter["bytes"] < 1_000_000
    same_outputs(version)


def test_control_tokens_travel_with_the_adapter(tiny_llama, store):
    home, engine, _, both = store
    version = register(engine, home / "models", train(quick(tiny_llama, dataset="both-v1", learning_rate=1e-2, name="adapt-both"), both, home),
                       both)
    assert version.params["multi_author"] and version.params["adapter"]["control_tokens"]
    same_outputs(version)


def test_a_from_chain_is_one_adapter_on_the_root_base(tiny_llama, store):
    home, engine, trump, _ = store
    first = register(engine, home / "models", train(quick(tiny_llama, learning_rate=1e-2, name="adapt-chain"), trump, home), trump)
    config = quick(tiny_llama, from_model=first.ref, train_layers=2, lora_r=8, max_steps=10, learning_rate=1e-2, name="adapt-chain")
    second = register(engine, home / "models", train(config, trump, home, resolve_from=lambda ref: resolve(engine, ref).path), trump)
    adapter = second.params["adapter"]
    assert adapter["base_path"] == str(tiny_llama) and adapter["chain_ranks"] == [16, 8] and adapter["rank"] == 24
    assert "LoRA adapter (rank 24, its --from chain's ranks 16+8 concatenated" in (second.path / "README.md").read_text()
    same_outputs(second, atol=5e-4)
    merged_first, _, _ = load_model(str(first.path))
    merged_second, tokenizer, _ = load_model(str(second.path))
    ids = tokenizer(TEXTS[1], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert not torch.allclose(merged_first(input_ids=ids).logits, merged_second(input_ids=ids).logits, atol=1e-3)  # the chain's 2nd link counts


def test_a_changed_or_missing_base_is_named(tiny_llama, store, tmp_path):
    home, engine, trump, _ = store
    base = tmp_path / "base"
    shutil.copytree(tiny_llama, base)
    version = register(engine, home / "models", train(quick(base, max_steps=5, name="adapt-moved"), trump, home), trump)
    weights = base / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(AdapterError, match=f"the base at {base} has changed since the adapter was trained"):
        load_adapted(version.path, version.params["adapter"])
    shutil.rmtree(base)
    with pytest.raises(AdapterError, match=f"its adapter's base {base} is gone; the merged export in {version.path} still works"):
        load_adapted(version.path, version.params["adapter"])
    assert load_model(str(version.path))[0] is not None


def test_a_full_fine_tune_has_no_adapter(tiny_gpt2, store):
    home, engine, trump, _ = store
    version = register(engine, home / "models", train(quick(tiny_gpt2, full=True, max_steps=3, name="adapt-full"), trump, home), trump)
    assert version.params["adapter"] is None and not (version.path / "adapter").exists()
