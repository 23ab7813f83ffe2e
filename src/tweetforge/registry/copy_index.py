"""The copy index: every word 8-gram of a model's training posts, hashed to 64 bits and sorted, so that
"does this generated post repeat 8 words of a training post, or a whole training post?" is a binary
search per window. Saved beside the weights (`copy_index/`, memory-mapped on load); 12 bytes per distinct
8-gram, so 1M posts of ~20 words take ~150 MB.

Words are lower-cased runs of letters and digits, so punctuation and case changes do not hide a copy."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tweetforge.errors import TweetforgeError
from tweetforge.files import atomic_directory

NGRAM = 8
NORMALIZATION = "lowercase \\w+ words, v1"
WORD = re.compile(r"\w+")
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd, so Horner's rule over words loses nothing mod 2^64


def words_of(text: str) -> list[str]:
    return WORD.findall(text.lower())


def _word_hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: spreads the polynomial hash over all 64 bits."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _window_hashes(word_hashes: np.ndarray) -> np.ndarray:
    """Hash of each run of NGRAM consecutive words (len - NGRAM + 1 values)."""
    count = len(word_hashes) - NGRAM + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    h = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(NGRAM):
            h = h * _MULTIPLIER + word_hashes[i : i + count]
        return _mix(h)


def _exact_hash(words: list[str]) -> int:
    return int.from_bytes(hashlib.blake2b(" ".join(words).encode(), digest_size=8).digest(), "little")


class CopyIndexError(TweetforgeError):
    """A copy index that cannot be used (built with other settings)."""


@dataclass(frozen=True)
class CopyMatch:
    kind: str
    """'exact' (the whole post is a training post) or 'ngram' (a run of >= 8 words)."""
    post: int
    """Row of the training split (in snapshot order) it copies."""


class CopyIndex:
    def __init__(self, ngrams: np.ndarray, ngram_posts: np.ndarray, exact: np.ndarray, exact_posts: np.ndarray, posts: int):
        self.ngrams, self.ngram_posts, self.exact, self.exact_posts, self.posts = ngrams, ngram_posts, exact, exact_posts, posts

    @classmethod
    def build(cls, texts: list[str]) -> CopyIndex:
        vocabulary: dict[str, int] = {}
        ids: list[int] = []
        owners: list[int] = []
        exact = np.empty(len(texts), dtype=np.uint64)
        for n, text in enumerate(texts):
            words = words_of(text)
            exact[n] = _exact_hash(words)
            ids.extend(vocabulary.setdefault(w, len(vocabulary)) for w in words)
            owners.extend([n] * len(words))
        table = np.fromiter((_word_hash(w) for w in vocabulary), dtype=np.uint64, count=len(vocabulary))
        owner = np.asarray(owners, dtype=np.uint32)
        hashes = _window_hashes(table[np.asarray(ids, dtype=np.int64)]) if ids else np.empty(0, dtype=np.uint64)
        inside = owner[: len(hashes)] == owner[NGRAM - 1 :] if len(hashes) else np.empty(0, dtype=bool)
        ngrams, first = np.unique(hashes[inside], return_index=True)
        exact_sorted, exact_first = np.unique(exact, return_index=True)
        return cls(ngrams, owner[: len(hashes)][inside][first], exact_sorted, exact_first.astype(np.uint32), len(texts))

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.ngrams, self.ngram_posts, self.exact, self.exact_posts))

    def find(self, text: str) -> CopyMatch | None:
        """The first training post this text copies (whole, or a run of 8 words), or None."""
        words = words_of(text)
        if not words:
            return None
        exact = np.uint64(_exact_hash(words))
        at = int(np.searchsorted(self.exact, exact))
        if at < len(self.exact) and self.exact[at] == exact:
            return CopyMatch("exact", int(self.exact_posts[at]))
        if len(words) < NGRAM or not len(self.ngrams):
            return None
        windows = _window_hashes(np.fromiter((_word_hash(w) for w in words), dtype=np.uint64, count=len(words)))
        positions = np.minimum(np.searchsorted(self.ngrams, windows), len(self.ngrams) - 1)
        hits = np.flatnonzero(self.ngrams[positions] == windows)
        if len(hits):
            return CopyMatch("ngram", int(self.ngram_posts[positions[hits[0]]]))
        return None

    def copies(self, text: str) -> bool:
        return self.find(text) is not None

    def save(self, directory: Path, source: dict) -> Path:
        with atomic_directory(directory) as staging:
            for name in ("ngrams", "ngram_posts", "exact", "exact_posts"):
                np.save(staging / f"{name}.npy", getattr(self, name))
            meta = {"ngram": NGRAM, "normalization": NORMALIZATION, "posts": self.posts, "ngrams": len(self.ngrams),
                    "bytes": self.nbytes, **source}
            (staging / "index.json").write_text(json.dumps(meta, indent=2))
        return directory

    @classmethod
    def load(cls, directory: Path) -> CopyIndex:
        meta = json.loads((directory / "index.json").read_text())
        if meta.get("ngram") != NGRAM or meta.get("normalization") != NORMALIZATION:
            raise CopyIndexError(f"{directory} was built with other settings ({meta.get('normalization')}, n={meta.get('ngram')})")
        arrays = {name: np.load(directory / f"{name}.npy", mmap_mode="r") for name in ("ngrams", "ngram_posts", "exact", "exact_posts")}
        return cls(**arrays, posts=meta["posts"])
