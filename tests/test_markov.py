"""The Markov chain baseline: it scores, samples reproducibly, and copies when data is scarce."""

from __future__ import annotations

from tweetforge.evaluation.markov import MarkovChain
from tweetforge.generation.generate import draw_without_copies
from tweetforge.registry.copy_index import CopyIndex


def test_markov_chain_scores_and_samples(trump_texts, musk_texts):
    chain = MarkovChain(trump_texts[:3000])
    own, other = chain.bits_per_character(trump_texts[3000:3300]), chain.bits_per_character(musk_texts[:300])
    assert 1.5 < own < other < 8
    first, again = chain.sample(5, seed=3), chain.sample(5, seed=3)
    assert [s.text for s in first] == [s.text for s in again] and all(len(s.text) <= 280 for s in first)
    assert chain.sample(3, seed=1, prompt="The fake news")[0].text.startswith("The fake news")


def test_markov_copies_a_lot_and_the_filter_stops_it(trump_texts):
    chain = MarkovChain(trump_texts[:200])  # so little data that a walk mostly retraces one post
    index = CopyIndex.build(trump_texts[:200])
    raw = chain.sample(100, seed=5)
    assert sum(index.copies(s.text) for s in raw) > 30
    kept, _, dropped = draw_without_copies(lambda count, seed: chain.sample(count, seed), 100, 5, index)
    assert not any(index.copies(s.text) for s in kept) and len(kept) + dropped == 100
