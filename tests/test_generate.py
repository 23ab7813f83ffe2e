"""Generation from a registered version: marked as generated, held to 280 characters at a word boundary,
the same posts for the same seed."""

from __future__ import annotations

import pytest

from conftest import quick
from tweetforge.generation.generate import GenerationError, Sampling, cut_to_limit, generate_posts
from tweetforge.registry.versions import register
from tweetforge.training.train import train


def test_generation_limits_stop_and_seed(tiny_gpt2, store):
    home, engine, trump, _ = store
    version = register(engine, home / "models", train(quick(tiny_gpt2, max_steps=5, name="tiny-gen"), trump, home), trump)
    posts = generate_posts(version, "The", n=6, sampling=Sampling(temperature=1.5), seed=7, copy_filter=False).posts
    assert len(posts) == 6 and all(len(p.text) <= 280 and p.text.startswith("The") for p in posts)
    assert all(p.generated and p.model == "tiny-gen" and p.version == version.version and p.seed == 7 for p in posts)
    assert "<|endoftext|>" not in " ".join(p.text for p in posts)

    def texts(seed):
        return [p.text for p in generate_posts(version, "The", n=3, seed=seed).posts]

    assert texts(7) == texts(7) and texts(7) != texts(8)
    with pytest.raises(GenerationError, match="temperature"):
        Sampling(temperature=0)


def test_cut_to_limit_at_a_word_boundary():
    text = "word " * 100
    cut = cut_to_limit(text)
    assert len(cut) <= 280 and cut.endswith("word") and not cut.endswith(" ")
    assert cut_to_limit("short post") == "short post"
