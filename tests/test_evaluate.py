"""Evaluation: metric functions against hand-computed cases and reference implementations, the copy index
and filter, bits per character across tokenizations, and evaluate / compare / promote on tiny models."""

from __future__ import annotations

from types import SimpleNamespace

import polars as pl
import pytest
import sacrebleu
import torch

from conftest import quick, shared
from tweetforge.data.snapshots import SnapshotRequest, create_snapshot
from tweetforge.evaluation.evaluate import (
    EvalSettings,
    EvaluationError,
    run_evaluations,
    score_texts,
)
from tweetforge.evaluation.markov import MarkovChain
from tweetforge.evaluation.metrics import (
    attribution_accuracy,
    detectability,
    distinct_n,
    length_distance,
    self_bleu,
)
from tweetforge.evaluation.promotion import gate, promote, promotion_log
from tweetforge.generation.generate import Sample, draw_without_copies
from tweetforge.registry.copy_index import CopyIndex, words_of
from tweetforge.registry.versions import register, resolve
from tweetforge.training.train import train


@pytest.fixture(scope="module")
def trump_texts():
    return pl.read_csv(shared("trump_archive.csv"))["text"].to_list()


@pytest.fixture(scope="module")
def musk_texts():
    return [t for t in pl.read_csv(shared("elonmusk_kaggle_2021.csv"))["tweet"].to_list() if len(t.split()) >= 3]


# ---------------------------------------------------------------- metric functions


def test_distinct_n_by_hand():
    texts = ["a b a b", "A c"]  # unigrams a b a b a c: 3 of 6; bigrams ab ba ab ac: 3 of 4
    assert distinct_n(texts, 1) == pytest.approx(0.5)
    assert distinct_n(texts, 2) == pytest.approx(0.75)


def test_self_bleu_equals_averaged_sacrebleu(trump_texts):
    texts = trump_texts[:40] + [trump_texts[3], trump_texts[3] + " again", "totally new words here"]
    reference = sum(sacrebleu.sentence_bleu(t, texts[:i] + texts[i + 1 :]).score for i, t in enumerate(texts)) / len(texts)
    assert self_bleu(texts) == pytest.approx(reference, abs=1e-9)
    assert self_bleu(["the same post here"] * 3) == pytest.approx(100.0)


def test_length_distance_by_hand():
    distance = length_distance([1, 2, 3], [2, 3, 4])  # every mass moves by one; the CDFs differ by at most 1/3
    assert distance["wasserstein"] == pytest.approx(1.0) and distance["ks"] == pytest.approx(1 / 3)
    assert length_distance([5, 5], [5, 5]) == {"wasserstein": 0.0, "ks": 0.0}


def test_detectability_tells_authors_apart_but_not_a_split_of_one(trump_texts, musk_texts):
    assert detectability(trump_texts[:300], musk_texts[:300]) > 0.85
    assert 0.3 < detectability(trump_texts[:300], trump_texts[300:600]) < 0.7
    accuracy = attribution_accuracy(trump_texts[:400] + musk_texts[:400], ["t"] * 400 + ["m"] * 400,
                                    trump_texts[400:500] + musk_texts[400:500], ["t"] * 100 + ["m"] * 100)
    assert accuracy > 0.85


# ---------------------------------------------------------------- bits per character


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


def test_markov_chain_scores_and_samples(trump_texts, musk_texts):
    chain = MarkovChain(trump_texts[:3000])
    own, other = chain.bits_per_character(trump_texts[3000:3300]), chain.bits_per_character(musk_texts[:300])
    assert 1.5 < own < other < 8
    first, again = chain.sample(5, seed=3), chain.sample(5, seed=3)
    assert [s.text for s in first] == [s.text for s in again] and all(len(s.text) <= 280 for s in first)
    assert chain.sample(3, seed=1, prompt="The fake news")[0].text.startswith("The fake news")


# ---------------------------------------------------------------- copy index and filter


def test_copy_index_catches_a_planted_copy_and_passes_novel_posts(trump_texts, musk_texts, tmp_path):
    index = CopyIndex.build(trump_texts)
    source = next(i for i, t in enumerate(trump_texts) if len(words_of(t)) >= 12)
    planted = "Honestly, " + " ".join(trump_texts[source].split()[1:10]).upper() + " and that is all."
    match = index.find(planted)
    assert match is not None and match.kind == "ngram" and len(set(words_of(trump_texts[match.post])) & set(words_of(planted))) >= 8
    assert index.find(trump_texts[source]).kind == "exact"
    assert index.find("A novel post about rockets, tunnels and electric cars that nobody has written before today") is None
    # against a plain set of word 8-grams: the same verdict on every Musk post (no misses, no false alarms)
    reference = {tuple(w[i : i + 8]) for w in map(words_of, trump_texts) for i in range(len(w) - 7)}
    whole = {tuple(words_of(t)) for t in trump_texts}
    probes = musk_texts[:2000] + [t + " extra words" for t in trump_texts[:300]]
    verdicts = []
    for text in probes:
        w = words_of(text)
        expected = tuple(w) in whole or any(tuple(w[i : i + 8]) in reference for i in range(len(w) - 7))
        assert (index.find(text) is not None) == expected, text
        verdicts.append(expected)
    assert 50 < sum(verdicts) < len(probes)
    loaded = CopyIndex.load(index.save(tmp_path / "copy_index", {"dataset": "test"}))
    assert loaded.find(planted) == match and loaded.posts == len(trump_texts)


def test_copy_filter_redraws_then_drops():
    index = CopyIndex.build(["one two three four five six seven eight nine"])
    copy, novel = "one two three four five six seven eight", "a fresh post"
    script = {0: [copy, novel, copy], 1_000_003: [novel, copy], 2_000_006: [copy], 3_000_009: [copy]}
    draws = []

    def draw(count, seed):
        draws.append((count, seed))
        return [Sample(text, True) for text in script[seed][:count]]

    kept, rejected, dropped = draw_without_copies(draw, 3, 0, index)
    assert [s.text for s in kept] == [novel, novel] and [s.filtered_copies for s in kept] == [1, 0]
    assert rejected == 5 and dropped == 1 and draws == [(3, 0), (2, 1_000_003), (1, 2_000_006), (1, 3_000_009)]
    kept, rejected, dropped = draw_without_copies(draw, 3, 0, None)
    assert len(kept) == 3 and rejected == dropped == 0


def test_markov_copies_a_lot_and_the_filter_stops_it(trump_texts):
    chain = MarkovChain(trump_texts[:200])  # so little data that a walk mostly retraces one post
    index = CopyIndex.build(trump_texts[:200])
    raw = chain.sample(100, seed=5)
    assert sum(index.copies(s.text) for s in raw) > 30
    kept, _, dropped = draw_without_copies(lambda count, seed: chain.sample(count, seed), 100, 5, index)
    assert not any(index.copies(s.text) for s in kept) and len(kept) + dropped == 100


# ---------------------------------------------------------------- evaluate, compare, promote


@pytest.fixture(scope="module")
def trained(tiny_gpt2, store):
    """Two versions of one name: a barely trained one and a better one."""
    home, engine, trump, _ = store
    weak = register(engine, home / "models", train(quick(tiny_gpt2, full=True, max_steps=3, name="tiny-eval"), trump, home), trump)
    strong = register(engine, home / "models", train(quick(tiny_gpt2, full=True, max_steps=60, learning_rate=3e-3, name="tiny-eval"), trump, home), trump)
    return weak, strong


SMALL = EvalSettings(samples=24, seed=3, max_test_posts=120)


def test_evaluate_writes_registry_card_and_compares_with_baselines(trained, store, tmp_path):
    from tweetforge.evaluation.plots import plot_comparison

    home, engine, trump, _ = store
    weak, strong = trained
    comparison = run_evaluations(engine, home, [strong.ref, "markov", "base"], None, SMALL, fresh=(strong.ref,), report_to="none")
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
    assert "### Test split of `trump-v1`" in card and "markov (baseline)" in card and f"{model.metrics['bits_per_char']:.3f}" in card

    again = run_evaluations(engine, home, [strong.ref, "markov"], None, SMALL, report_to="none")
    assert [e.id for e in again.evaluations] == [model.id, markov.id]  # stored evaluations are reused
    plot = plot_comparison(comparison.evaluations, comparison.real_texts(), tmp_path / "compare.png")
    assert plot.stat().st_size > 20_000


def test_evaluating_on_a_snapshot_without_the_authors_test_posts_fails_clearly(trained, store):
    home, engine, _, _ = store
    create_snapshot(engine, home / "datasets", SnapshotRequest("musk-only", ("elonmusk",)))
    with pytest.raises(EvaluationError, match=r"dataset musk-only has no test posts by @realDonaldTrump .*--dataset"):
        run_evaluations(engine, home, [trained[1].ref], "musk-only", SMALL, report_to="none")


def test_promote_accepts_better_refuses_worse_and_logs_everything(trained, store):
    home, engine, _, _ = store
    weak, strong = trained
    first = promote(engine, home, strong.ref, max_copy_rate=1.0, settings=SMALL, report_to="none")
    assert first.promoted and not first.forced and resolve(engine, "tiny-eval:champion").version == strong.version
    refused = promote(engine, home, weak.ref, max_copy_rate=1.0, settings=SMALL, report_to="none")
    assert not refused.promoted and resolve(engine, "tiny-eval:champion").version == strong.version
    assert f"{refused.candidate_metrics['bits_per_char']:.4f}" in refused.reasons[0] and f"{refused.champion_metrics['bits_per_char']:.4f}" in refused.reasons[0]
    forced = promote(engine, home, weak.ref, max_copy_rate=1.0, force=True, settings=SMALL, report_to="none")
    assert forced.promoted and forced.forced and resolve(engine, "tiny-eval:champion").version == weak.version
    log = promotion_log(engine, "tiny-eval")
    assert [(r["from_version"], r["to_version"], r["promoted"], r["forced"]) for r in log] == [
        (None, strong.version, True, False), (strong.version, weak.version, False, False), (strong.version, weak.version, True, True)]
    assert all(r["who"] and r["candidate"]["bits_per_char"] for r in log)


def test_gate_margins():
    champion = {"bits_per_char": 2.0, "copy_rate": 0.0}
    assert gate({"bits_per_char": 2.019, "copy_rate": 0.01}, champion, 0.01, 0.01) == []
    reasons = gate({"bits_per_char": 2.03, "copy_rate": 0.02}, champion, 0.01, 0.01)
    assert "2.0300 vs champion 2.0000" in reasons[0] and "copy rate 2.0%" in reasons[1]
    assert gate({"bits_per_char": 9.0, "copy_rate": 0.0}, None, 0.01, 0.01) == []


def test_multi_author_model_gets_author_attribution(store):
    home, engine, _, both = store
    result = train(quick("scratch", dataset="both-v1", layers=1, width=64, max_steps=20, name="tiny-both"), both, home)
    version = register(engine, home / "models", result, both)
    evaluation = run_evaluations(engine, home, [version.ref], None, SMALL, report_to="none").evaluations[0]
    authors = {s["author"] for s in evaluation.samples}
    assert authors == set(version.params["authors"]) and len(authors) == 2
    assert evaluation.metrics["attribution_accuracy_real"] > 0.8  # the classifier itself tells the two apart
    assert 0 <= evaluation.metrics["attribution_accuracy"] <= 1
