"""The cheapest model that writes like someone: a word-level Markov chain of order 2, the baseline every
trained model must beat.

It generates from trigram counts (what a Markov chain is). To score held-out text in bits per character
it must give every string a probability, unseen words included, so scoring interpolates trigram, bigram
and unigram estimates (Witten-Bell) down to a spelling model over characters for words never seen. A post
is its words split on single spaces (cleaned posts have no other whitespace, so the split is exact and
reversible) followed by an end-of-post symbol."""

from __future__ import annotations

import bisect
import math
import random
from collections import Counter, defaultdict

from tweetforge.data.post import MAX_POST_CHARS
from tweetforge.evaluation.metrics import LN2, LikelihoodTotals
from tweetforge.generation.generate import Sample, cut_to_limit

START, END = "\x02", "\x03"
UNICODE_SIZE = 0x110000
MAX_WORDS = 120


class MarkovChain:
    def __init__(self, texts: list[str]):
        if not texts:
            raise ValueError("a Markov chain needs at least one training post")
        self.trigrams: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        self.bigrams: dict[str, Counter[str]] = defaultdict(Counter)
        self.unigrams: Counter[str] = Counter()
        characters: Counter[str] = Counter()
        for text in texts:
            words = text.split(" ")
            sequence = [START, START, *words, END]
            for u, v, w in zip(sequence, sequence[1:], sequence[2:]):
                self.trigrams[(u, v)][w] += 1
                self.bigrams[v][w] += 1
                self.unigrams[w] += 1
            for word in words:
                characters.update(word)
                characters[END] += 1
        self.tokens = sum(self.unigrams.values())
        # add-one over the characters seen, plus one share for all others (spread over Unicode)
        self._char_total = sum(characters.values()) + len(characters) + 1
        self._char_counts = characters
        self._samplers: dict[tuple[str, str], tuple[list[str], list[int]]] = {}

    # ------------------------------------------------------------ scoring

    def _spelling(self, word: str) -> float:
        unseen = 1 / self._char_total / (UNICODE_SIZE - len(self._char_counts))
        p = (self._char_counts[END] + 1) / self._char_total
        for c in word:
            p *= (self._char_counts[c] + 1) / self._char_total if c in self._char_counts else unseen
        return p

    def _unigram(self, w: str) -> float:
        types = len(self.unigrams)
        return (self.unigrams[w] + types * (0.0 if w == END else self._spelling(w))) / (self.tokens + types)

    @staticmethod
    def _witten_bell(counts: Counter[str] | None, w: str, lower: float) -> float:
        if not counts:
            return lower
        total, types = sum(counts.values()), len(counts)
        return (counts[w] + types * lower) / (total + types)

    def probability(self, u: str, v: str, w: str) -> float:
        bigram = self._witten_bell(self.bigrams.get(v), w, self._unigram(w))
        return self._witten_bell(self.trigrams.get((u, v)), w, bigram)

    def score(self, texts: list[str]) -> LikelihoodTotals:
        nats, tokens = 0.0, 0
        for text in texts:
            sequence = [START, START, *text.split(" "), END]
            for u, v, w in zip(sequence, sequence[1:], sequence[2:]):
                nats -= math.log(self.probability(u, v, w))
                tokens += 1
        return LikelihoodTotals(nats, tokens, sum(len(t) + 1 for t in texts))

    def bits_per_character(self, texts: list[str]) -> float:
        totals = self.score(texts)
        return totals.nats / LN2 / totals.characters

    # ------------------------------------------------------------ generation

    def _next(self, u: str, v: str, rng: random.Random) -> str:
        key = (u, v)
        if key not in self._samplers:
            counts = self.trigrams.get(key) or self.bigrams.get(v) or self.unigrams
            words = list(counts)
            cumulative, total = [], 0
            for word in words:
                total += counts[word]
                cumulative.append(total)
            self._samplers[key] = (words, cumulative)
        words, cumulative = self._samplers[key]
        return words[bisect.bisect_right(cumulative, rng.randrange(cumulative[-1]))]

    def sample(self, n: int, seed: int, prompt: str = "", max_chars: int = MAX_POST_CHARS) -> list[Sample]:
        """n posts, each a walk from the start of a post (through the prompt's words) to the end symbol."""
        rng = random.Random(seed)
        prompt_words = prompt.split(" ") if prompt else []
        samples = []
        for _ in range(n):
            words = list(prompt_words)
            u, v = ([START, START] + words)[-2:]
            ended = False
            while len(words) < MAX_WORDS:
                w = self._next(u, v, rng)
                if w == END:
                    ended = True
                    break
                words.append(w)
                u, v = v, w
            text = " ".join(words).strip()
            limited = cut_to_limit(text, max_chars)
            samples.append(Sample(limited, ended and limited == text))
        return samples
