"""Evaluation metrics against hand-computed cases and reference implementations."""

from __future__ import annotations

import pytest
import sacrebleu

from tweetforge.evaluation.metrics import attribution_accuracy, detectability, distinct_n, length_distance, self_bleu


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
