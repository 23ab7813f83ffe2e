"""Metric functions on plain lists of texts and numbers; evaluate.py decides what they are applied to."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

LN2 = math.log(2)


@dataclass(frozen=True)
class LikelihoodTotals:
    """Summed negative log-likelihood of a set of texts, each scored from the start of a post through its
    end-of-post token."""

    nats: float
    tokens: int
    """Tokens predicted (text tokens plus one end-of-post per text)."""
    characters: int
    """Characters of the texts plus one per text for the end of the post, which is predicted too."""

    @property
    def bits_per_character(self) -> float:
        return self.nats / LN2 / self.characters

    @property
    def token_perplexity(self) -> float:
        return math.exp(self.nats / self.tokens)


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct n-grams / all n-grams over every text (Li et al., 2016), on lower-cased whitespace words."""
    grams: Counter[tuple[str, ...]] = Counter()
    for text in texts:
        words = text.lower().split()
        grams.update(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    total = sum(grams.values())
    return len(grams) / total if total else 0.0


def self_bleu(texts: list[str], max_order: int = 4) -> float:
    """Mean sentence BLEU of each text against all the others as references (Zhu et al., 2018): 100 means
    every post repeats the others, 0 that they share nothing. The same score as averaging sacrebleu's
    sentence_bleu(text, others) (13a tokens, exp smoothing, effective order), but each n-gram's best count
    among the other texts comes from its top two counts overall, so it costs O(total n-grams), not
    O(texts^2) (200 posts: ~0.1 s instead of ~20 s)."""
    from sacrebleu.metrics.bleu import BLEU
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    if len(texts) < 2:
        raise ValueError("self-BLEU needs at least two texts")
    tokenize = Tokenizer13a()
    tokens = [tokenize(t.rstrip()).split() for t in texts]
    counts = [Counter(tuple(words[i : i + n]) for n in range(1, max_order + 1) for i in range(len(words) - n + 1)) for words in tokens]
    top: dict[tuple[str, ...], list[int]] = {}  # n-gram -> [highest count, text holding it, second highest]
    for owner, grams in enumerate(counts):
        for gram, c in grams.items():
            best = top.get(gram)
            if best is None:
                top[gram] = [c, owner, 0]
            elif c > best[0]:
                top[gram] = [c, owner, best[0]]
            elif c > best[2]:
                best[2] = c
    lengths = sorted((len(words), i) for i, words in enumerate(tokens))
    sorted_lengths = np.array([length for length, _ in lengths])
    scores = []
    for i, (words, grams) in enumerate(zip(tokens, counts)):
        correct, total = [0] * max_order, [0] * max_order
        for gram, c in grams.items():
            best = top[gram]
            others = best[2] if best[1] == i else best[0]
            correct[len(gram) - 1] += min(c, others)
            total[len(gram) - 1] += c
        ref_len = _closest_other_length(sorted_lengths, lengths, len(words), i)
        scores.append(BLEU.compute_bleu(correct, total, len(words), ref_len, smooth_method="exp", effective_order=True).score)
    return float(np.mean(scores))


def _closest_other_length(sorted_lengths: np.ndarray, lengths: list[tuple[int, int]], hyp_len: int, own: int) -> int:
    """sacrebleu's reference length: the reference length closest to the hypothesis, the shorter on a tie."""
    at = int(np.searchsorted(sorted_lengths, hyp_len))
    candidates = [lengths[j] for j in range(max(0, at - 2), min(len(lengths), at + 3)) if lengths[j][1] != own]
    return min(candidates, key=lambda item: (abs(item[0] - hyp_len), item[0]))[0]


def length_distance(generated: list[float], real: list[float]) -> dict[str, float]:
    """How far the generated length distribution is from the real one: Wasserstein-1 (in the unit of the
    lengths: how many characters or words the histograms must move, on average) and the Kolmogorov-Smirnov
    statistic (largest gap between the two CDFs, 0..1)."""
    from scipy.stats import ks_2samp, wasserstein_distance

    if not generated or not real:
        raise ValueError("length distance needs generated and real lengths")
    return {"wasserstein": float(wasserstein_distance(generated, real)), "ks": float(ks_2samp(generated, real).statistic)}


def word_count(text: str) -> int:
    return len(text.split())


def _text_classifier(seed: int):  # type: ignore[no-untyped-def]
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    features = make_union(
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=2),
    )
    return make_pipeline(features, LogisticRegression(max_iter=2000, C=4.0, random_state=seed))


def detectability(real: list[str], generated: list[str], seed: int = 0, folds: int = 5) -> float:
    """Cross-validated accuracy of a TF-IDF + logistic regression classifier telling real posts from
    generated ones, on equal numbers of each: 0.5 means indistinguishable, 1.0 trivially told apart."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    size = min(len(real), len(generated))
    if size < folds:
        raise ValueError(f"detectability needs at least {folds} real and {folds} generated posts (have {len(real)} and {len(generated)})")
    rng = np.random.default_rng(seed)
    texts = [real[i] for i in rng.permutation(len(real))[:size]] + [generated[i] for i in rng.permutation(len(generated))[:size]]
    labels = [0] * size + [1] * size
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(_text_classifier(seed), texts, labels, cv=splitter).mean())


def attribution_accuracy(train_texts: list[str], train_authors: list[str], texts: list[str], authors: list[str], seed: int = 0) -> float:
    """Share of texts that a classifier trained on the real posts attributes to the author they were
    written (or generated) as."""
    classifier = _text_classifier(seed).fit(train_texts, train_authors)
    return float(np.mean(classifier.predict(texts) == np.asarray(authors)))
