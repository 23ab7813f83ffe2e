"""The copy index (word 8-grams of the training posts) and the copy filter that re-draws copying posts."""

from __future__ import annotations

from tweetforge.generation.generate import Sample, draw_without_copies
from tweetforge.registry.copy_index import CopyIndex, words_of


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
