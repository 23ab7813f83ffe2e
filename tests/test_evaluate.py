"""Evaluation: bits per character across tokenizations, and evaluate / compare on tiny models beside the
baselines."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from conftest import SMALL_EVAL, quick
from tweetforge.data.snapshots import SnapshotRequest, create_snapshot
from tweetforge.evaluation.evaluate import EvaluationError, run_evaluations, score_texts
from tweetforge.evaluation.report import METRICS
from tweetforge.registry.versions import register, resolve
from tweetforge.training.train import train


class UnigramModel(torch.nn.Module):
    """Fixed next-token probabilities at every position, whatever the context."""

    def __init__(self, probabilities: list[float], context: int | None = None):
        super().__init__()
        self.log_probabilities = torch.log(torch.tensor(probabilities))
        self.config = SimpleNamespace(n_positions=context)

    def forward(self, input_ids):
        return SimpleNamespace(logits=self.log_probabilities.expand(*input_ids.shape, -1).clone())


def _tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]]):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(vocab, merges)), eos_token="<eos>", pad_token="<eos>")


def test_bits_per_char_agrees_across_two_tokenizations():
    """The same distribution over strings, once over characters and once with an 'aa' token: the bits
    per character agree, the token perplexities do not (which is why bits per character is the metric)."""
    chars = _tokenizer({"<eos>": 0, "a": 1}, [])
    pairs = _tokenizer({"<eos>": 0, "a": 1, "aa": 2}, [("a", "a")])
    texts = ["aaaa", "aa", "aaaaaaaa"]
    assert pairs("aaaa", add_special_tokens=False)["input_ids"] == [2, 2]
    by_char = score_texts(UnigramModel([0.5, 0.5]), chars, texts, [[0]] * 3)
    by_pair = score_texts(UnigramModel([0.5, 0.25, 0.25]), pairs, texts, [[0]] * 3)
    # each 'a' costs 1 bit, each end of post 1 bit: 14 + 3 bits over 14 + 3 characters
    assert by_char.bits_per_character == pytest.approx(1.0) and by_pair.bits_per_character == pytest.approx(1.0)
    assert by_char.token_perplexity == pytest.approx(2.0) and by_pair.token_perplexity == pytest.approx(2 ** (17 / 10))
    windowed = score_texts(UnigramModel([0.5, 0.5], context=3), chars, texts, [[0]] * 3)
    assert windowed.tokens == by_char.tokens and windowed.nats == pytest.approx(by_char.nats)


def test_evaluate_writes_registry_card_and_compares_with_baselines(trained, store, tmp_path):
    from tweetforge.evaluation.plots import plot_comparison

    home, engine, trump, _ = store
    weak, strong = trained
    comparison = run_evaluations(engine, home, [strong.ref, "markov", "base"], None, SMALL_EVAL, fresh=(strong.ref,), report_to="none")
    model, markov, base = comparison.evaluations
    assert (model.subject, markov.subject, base.subject) == (strong.ref, "markov", f"base:{strong.params['untuned_base']}")
    assert model.dataset == "trump-v1" and model.metrics["test_posts"] == 120 and model.metrics["samples"] == 24
    # training lowers bits per char below the untrained base it started from
    assert model.metrics["bits_per_char"] < base.metrics["bits_per_char"]
    for key in ("distinct_1", "distinct_2", "ended_share", "copy_rate", "detectability"):
        assert 0 <= model.metrics[key] <= 1
    assert model.metrics["tokenizer"] == base.metrics["tokenizer"] and markov.metrics["tokenizer"] is None

    row = resolve(engine, strong.ref)
    assert row.metrics["test"]["trump-v1"]["bits_per_char"] == pytest.approx(model.metrics["bits_per_char"])
    card = (strong.path / "README.md").read_text()
    assert "### Test split of `trump-v1`" in card and "markov (baseline)" in card
    assert METRICS["bits_per_char"].show(model.metrics["bits_per_char"]) in card

    again = run_evaluations(engine, home, [strong.ref, "markov"], None, SMALL_EVAL, report_to="none")
    assert [e.id for e in again.evaluations] == [model.id, markov.id]  # stored evaluations are reused
    plot = plot_comparison(comparison.evaluations, comparison.real_texts(), tmp_path / "compare.png")
    assert plot.stat().st_size > 20_000


def test_evaluating_on_a_snapshot_without_the_authors_test_posts_fails_clearly(trained, store):
    home, engine, _, _ = store
    create_snapshot(engine, home / "datasets", SnapshotRequest("musk-only", ("elonmusk",)))
    with pytest.raises(EvaluationError, match=r"dataset musk-only has no test posts by @realDonaldTrump .*--dataset"):
        run_evaluations(engine, home, [trained[1].ref], "musk-only", SMALL_EVAL, report_to="none")


def test_multi_author_model_gets_author_attribution(store):
    home, engine, _, both = store
    result = train(quick("scratch", dataset="both-v1", layers=1, width=64, max_steps=20, name="tiny-both"), both, home)
    version = register(engine, home / "models", result, both)
    evaluation = run_evaluations(engine, home, [version.ref], None, SMALL_EVAL, report_to="none").evaluations[0]
    authors = {s["author"] for s in evaluation.samples}
    assert authors == set(version.params["authors"]) and len(authors) == 2
    assert evaluation.metrics["attribution_accuracy_real"] > 0.8  # the classifier itself tells the two apart
    assert 0 <= evaluation.metrics["attribution_accuracy"] <= 1
