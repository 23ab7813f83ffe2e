#!/usr/bin/env python
"""Benchmark: the copy index (`tweetforge.registry.copy_index.CopyIndex`) of N training posts (default 1,000,000):
build time, size in memory and on disk, load time, peak RSS, and the lookup cost per generated post,
against the obvious implementation, "python-set": a Python `set` of 8-word tuples plus a `set` of
whole-post word tuples, built from the same posts and asked the same questions.

Corpus. The real posts of ../shared/data (read from there, never copied into the project):
`trump_archive.csv` (`text`), `elonmusk_kaggle_2021.csv` (`tweet`) and `elonmusk_cleaned.csv` (`tweet`),
cleaned roughly as the default CleaningRules do (retweets dropped, HTML entities decoded, URLs removed,
whitespace collapsed, posts of fewer than 3 words that are not @mentions/#hashtags dropped), then
deduplicated by their word sequence (lower-cased `\\w+` words, the index's normalization). 1,000 of the
posts with >= 8 words are held out (seeded draw) for the probes; the rest are the base posts.

Real posts repeat, and the index keeps each distinct 8-gram once, so repeating the base posts would
measure a tiny index. Post n of the corpus is base post i = n mod B in repetition k = n div B: repetition
0 is the real text; repetition k > 0 is that post's word sequence shuffled by `random.Random(SEED + k)`
(one generator per repetition, posts shuffled in order), joined by spaces. So every post keeps a real
length and vocabulary, and almost every 8-gram of a shuffled post is new; the numbers of distinct
8-grams and of distinct whole posts are printed. (Posts of 1 word, or of one repeated word, cannot be
made distinct by shuffling; they are few.)

Probes (the same on both sides, rebuilt deterministically in each child; their digest is compared):
  novel    the 1,000 held-out real posts, as they are (not in the index; a few may still share an
           8-gram with a training post, e.g. Elon's two files overlap, and are then flagged by both)
  planted  the same 1,000 posts, each with a run of 8 consecutive words of a random corpus post
           (shuffled repetitions included) inserted at a random word boundary: every one must be found

Each side runs in its own subprocess (peak RSS = that child's `ru_maxrss` from os.wait4; it includes
the corpus, so the RSS just before the build is reported too). The CopyIndex side builds, saves to
benchmarks/.work (removed afterwards), loads it back memory-mapped (as `generate` does) and times
`copies()` on the loaded index: one first pass right after the load (page faults included), then
--passes passes whose per-probe median is reported. The python-set side times its own `copies()` the
same way. Verdicts of both sides must agree on every probe. Speed is reported, never asserted.

Usage: .venv/bin/python benchmarks/copy_filter.py [--posts N] [--probes N] [--passes N] [--only SIDE]
Smoke test: --posts 20000. Results: benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import csv
import gc
import hashlib
import html
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tweetforge.registry.copy_index import NGRAM, CopyIndex, words_of

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
WORK = ROOT / "benchmarks" / ".work"

SEED = 20261121
HELD_OUT = 1_000
SIDES = ("copyindex", "python-set")

# Cost of generating one post with the default model (SmolLM2-135M) on this machine, from the issue's
# measurements (not measured here): ~21 tokens/s at batch 1, ~151 tokens/s at batch 16, ~40 tokens a post.
GEN_TOKENS_PER_POST = 40
GEN_TOKENS_PER_S = {"batch 1": 21.0, "batch 16": 151.0}

URL = re.compile(r"(?:https?://|www\.|pic\.twitter\.com/)\S+")  # clean.URL_PATTERN
SPACE = re.compile(r"\s+")

csv.field_size_limit(10_000_000)


# ----------------------------------------------------------------------------------------------------
# corpus and probes (deterministic, not timed; rebuilt in each child)


def _real_texts() -> list[str]:
    """The three files' post texts, retweets dropped, in file order."""
    texts = []
    with (SHARED / "trump_archive.csv").open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row.get("isRetweet") != "t":
                texts.append(row.get("text") or "")
    with (SHARED / "elonmusk_kaggle_2021.csv").open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row.get("retweet") != "True":
                texts.append(row.get("tweet") or "")
    with (SHARED / "elonmusk_cleaned.csv").open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            texts.append(row.get("tweet") or "")
    return texts


def _clean(text: str) -> str | None:
    if text.startswith("RT @"):
        return None
    text = SPACE.sub(" ", URL.sub(" ", html.unescape(text))).strip()
    if sum(1 for word in text.split() if word[0] not in "@#") < 3:
        return None
    return text


def real_posts() -> tuple[list[str], list[str]]:
    """(base posts, held-out posts): cleaned, distinct by word sequence; held-out ones have >= 8 words."""
    seen: set[tuple[str, ...]] = set()
    posts = []
    for raw in _real_texts():
        text = _clean(raw)
        if text is None:
            continue
        key = tuple(words_of(text))
        if key in seen:
            continue
        seen.add(key)
        posts.append(text)
    long_enough = [i for i, t in enumerate(posts) if len(words_of(t)) >= NGRAM]
    held = set(random.Random(SEED).sample(long_enough, HELD_OUT))
    return [t for i, t in enumerate(posts) if i not in held], [posts[i] for i in sorted(held)]


def corpus(n: int, base: list[str]) -> list[str]:
    """n posts: the base posts, then repetitions with each post's words shuffled (one RNG per repetition)."""
    out = base[:n]
    k = 0
    while len(out) < n:
        k += 1
        rng = random.Random(SEED + k)
        for text in base[: n - len(out)]:
            words = words_of(text)
            rng.shuffle(words)
            out.append(" ".join(words))
    return out


def probes(texts: list[str], held_out: list[str], count: int) -> tuple[list[str], list[bool]]:
    """(probe texts, planted?): count // 2 novel held-out posts, then the same posts with a planted 8-word copy."""
    half = min(count // 2, len(held_out))
    rng = random.Random(SEED - 1)
    novel = held_out[:half]
    planted = []
    for host in novel:
        while True:
            words = words_of(texts[rng.randrange(len(texts))])
            if len(words) >= NGRAM:
                break
        start = rng.randrange(len(words) - NGRAM + 1)
        run = " ".join(words[start : start + NGRAM])
        tokens = host.split()
        at = rng.randrange(len(tokens) + 1)
        planted.append(" ".join(tokens[:at] + [run] + tokens[at:]))
    return novel + planted, [False] * half + [True] * half


# ----------------------------------------------------------------------------------------------------
# the baseline: the obvious implementation


class SetIndex:
    """python-set: every 8-word tuple of the training posts in a set, and every whole post's word tuple."""

    def __init__(self) -> None:
        self.ngrams: set[tuple[str, ...]] = set()
        self.exact: set[tuple[str, ...]] = set()

    @classmethod
    def build(cls, texts: list[str]) -> SetIndex:
        index = cls()
        for text in texts:
            words = words_of(text)
            index.exact.add(tuple(words))
            index.ngrams.update(zip(*(words[i:] for i in range(NGRAM))))
        return index

    def copies(self, text: str) -> bool:
        words = words_of(text)
        if not words:
            return False
        if tuple(words) in self.exact:
            return True
        return any(gram in self.ngrams for gram in zip(*(words[i:] for i in range(NGRAM))))


# ----------------------------------------------------------------------------------------------------
# one side, in its own process


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def time_lookups(copies, texts: list[str], passes: int) -> tuple[list[float], list[float], list[bool]]:  # type: ignore[no-untyped-def]
    """(µs of the first pass per probe, per-probe median µs of `passes` further passes, verdicts)."""
    clock = time.perf_counter_ns
    first, verdicts = [], []
    for text in texts:
        t = clock()
        verdict = copies(text)
        first.append((clock() - t) / 1000)
        verdicts.append(verdict)
    runs = []
    for _ in range(passes):
        run = []
        for text in texts:
            t = clock()
            copies(text)
            run.append((clock() - t) / 1000)
        runs.append(run)
    return (
        first,
        [statistics.median(r[i] for r in runs) for i in range(len(texts))],
        verdicts,
    )


def child(side: str, posts: int, count: int, passes: int, out: Path) -> None:
    base, held_out = real_posts()
    texts = corpus(posts, base)
    probe_texts, planted = probes(texts, held_out, count)
    total_words = sum(len(words_of(t)) for t in texts)
    result: dict = {
        "posts": len(texts),
        "base_posts": len(base),
        "words": total_words,
        "probes": len(probe_texts),
        "probe_digest": hashlib.sha256("\x00".join(probe_texts).encode()).hexdigest()[:16],
        "probe_words": statistics.mean(len(words_of(t)) for t in probe_texts),
    }
    gc.collect()
    result["rss_before_mib"] = rss_mib()
    result["peak_before_mib"] = peak_mib()

    t = time.perf_counter()
    index = CopyIndex.build(texts) if side == "copyindex" else SetIndex.build(texts)
    result["build_s"] = time.perf_counter() - t
    result["peak_build_mib"] = peak_mib()
    gc.collect()
    result["rss_after_mib"] = rss_mib()

    if side == "copyindex":
        assert isinstance(index, CopyIndex)
        result["ngrams"] = len(index.ngrams)
        result["exact"] = len(index.exact)
        result["nbytes"] = index.nbytes
        target = out / "copy_index"
        t = time.perf_counter()
        index.save(target, {"benchmark": "copy_filter"})
        result["save_s"] = time.perf_counter() - t
        result["disk_bytes"] = sum(p.stat().st_size for p in target.iterdir())
        in_memory = [index.copies(p) for p in probe_texts]
        del index
        gc.collect()
        t = time.perf_counter()
        loaded = CopyIndex.load(target)
        result["load_s"] = time.perf_counter() - t
        first, steady, verdicts = time_lookups(loaded.copies, probe_texts, passes)
        result["same_as_in_memory"] = verdicts == in_memory
    else:
        assert isinstance(index, SetIndex)
        result["ngrams"] = len(index.ngrams)
        result["exact"] = len(index.exact)
        first, steady, verdicts = time_lookups(index.copies, probe_texts, passes)
    result["first_us"] = first
    result["steady_us"] = steady
    result["verdicts"] = "".join("1" if v else "0" for v in verdicts)
    result["planted_missed"] = sum(1 for v, p in zip(verdicts, planted) if p and not v)
    result["novel_flagged"] = sum(1 for v, p in zip(verdicts, planted) if not p and v)
    print(json.dumps(result))


def run_side(side: str, args: argparse.Namespace) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"copy_filter-{side}-", dir=WORK))
    try:
        command = [
            sys.executable,
            __file__,
            "--side",
            side,
            "--posts",
            str(args.posts),
            "--probes",
            str(args.probes),
            "--passes",
            str(args.passes),
            "--out",
            str(out),
        ]
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        output = process.stdout.read()  # type: ignore[union-attr]
        _, status, usage = os.wait4(process.pid, 0)
        if os.waitstatus_to_exitcode(status):
            sys.exit(f"the {side} side failed (exit {os.waitstatus_to_exitcode(status)})")
        result = json.loads(output.strip().splitlines()[-1])
        result["wall_s"] = time.perf_counter() - started
        result["peak_rss_mib"] = usage.ru_maxrss / 1024
        return result
    finally:
        shutil.rmtree(out, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------
# driver


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
        "?",
    )
    mem = next((int(line.split()[1]) for line in meminfo if line.startswith("MemTotal")), 0)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores ({cpu}), {mem / 1024**2:.1f} GiB RAM, Python {platform.python_version()}, load average {load}"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--posts",
        type=int,
        default=1_000_000,
        help="training posts in the index (default 1,000,000)",
    )
    parser.add_argument(
        "--probes",
        type=int,
        default=2_000,
        help="probe posts, half novel and half planted (default 2,000)",
    )
    parser.add_argument(
        "--passes",
        type=int,
        default=5,
        help="timed passes over the probes after the first (default 5)",
    )
    parser.add_argument("--only", choices=SIDES, help="run one side only")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        child(args.side, args.posts, args.probes, args.passes, args.out)
        return

    import numpy as np
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=130)
    missing = [
        n
        for n in (
            "trump_archive.csv",
            "elonmusk_kaggle_2021.csv",
            "elonmusk_cleaned.csv",
        )
        if not (SHARED / n).exists()
    ]
    if missing:
        sys.exit(f"missing input data in {SHARED}: {', '.join(missing)}")
    WORK.mkdir(parents=True, exist_ok=True)
    console.print(f"machine: {machine()}; numpy {np.__version__}")

    results = {}
    for side in SIDES:
        if args.only and side != args.only:
            continue
        with console.status(f"{side}: corpus of {args.posts:,} posts, build, lookups ..."):
            results[side] = run_side(side, args)
        r = results[side]
        console.print(f"{side}: built in {r['build_s']:.1f} s; child wall time {r['wall_s']:.1f} s")

    r0 = next(iter(results.values()))
    console.print(
        f"corpus: {r0['posts']:,} posts ({r0['base_posts']:,} distinct real posts, the rest shuffled repetitions), "
        f"{r0['words']:,} words ({r0['words'] / r0['posts']:.1f} a post); "
        f"{r0['probes']:,} probes ({r0['probe_words']:.1f} words a probe, digest {r0['probe_digest']})"
    )

    for side, r in results.items():
        r["memory_bytes"] = r["nbytes"] if side == "copyindex" else (r["rss_after_mib"] - r["rss_before_mib"]) * 2**20
        r["median_us"], r["p99_us"] = (
            statistics.median(r["steady_us"]),
            pct(r["steady_us"], 0.99),
        )
        r["first_median_us"], r["first_p99_us"] = (
            statistics.median(r["first_us"]),
            pct(r["first_us"], 0.99),
        )
    rows = [  # (label, key, format, ratio python-set / CopyIndex?)
        ("build, s", "build_s", "{:.1f}", True),
        ("distinct 8-grams", "ngrams", "{:,}", False),
        ("distinct whole posts", "exact", "{:,}", False),
        (
            "memory, MiB (CopyIndex: nbytes; python-set: RSS growth)",
            "memory_bytes",
            "mib",
            True,
        ),
        ("on disk after save, MiB", "disk_bytes", "mib", False),
        ("save, s", "save_s", "{:.2f}", False),
        ("load (mmap), ms", "load_s", "ms", False),
        (
            "RSS before the build (corpus loaded), MiB",
            "rss_before_mib",
            "{:,.0f}",
            False,
        ),
        ("peak RSS of the child, MiB", "peak_rss_mib", "{:,.0f}", True),
        ("lookup µs/post, median", "median_us", "{:.1f}", True),
        ("lookup µs/post, p99", "p99_us", "{:.1f}", True),
        ("first pass after load µs/post, median", "first_median_us", "{:.1f}", True),
        ("first pass after load µs/post, p99", "first_p99_us", "{:.1f}", True),
    ]
    table = Table(
        title=f"copy index of {args.posts:,} posts; {r0['probes']:,} probe posts, half with a planted 8-word copy"
    )
    table.add_column("")
    for side in results:
        table.add_column(side, justify="right")
    if len(results) == 2:
        table.add_column("python-set / CopyIndex", justify="right")

    def show(value, how):  # type: ignore[no-untyped-def]
        if value is None:
            return "-"
        if how == "mib":
            return f"{value / 2**20:,.1f}"
        if how == "ms":
            return f"{value * 1000:.1f}"
        return how.format(value)

    for label, key, how, ratio in rows:
        cells = [show(r.get(key), how) for r in results.values()]
        if len(results) == 2:
            a, b = results["copyindex"].get(key), results["python-set"].get(key)
            cells.append(f"{b / a:.2f}x" if ratio and a and b else "")
        table.add_row(label, *cells)
    console.print(table)

    for side, r in results.items():
        half = r["probes"] // 2
        if r["planted_missed"]:
            console.print(f"[red]{side}: {r['planted_missed']} of {half:,} planted copies NOT found[/red]")
        else:
            console.print(
                f"{side}: all {half:,} planted copies found; {r['novel_flagged']} of {half:,} novel posts flagged"
            )
        if side == "copyindex":
            console.print(
                f"copyindex: loaded (mmap) and in-memory index give the same verdicts: {r['same_as_in_memory']}; "
                f"{r['nbytes'] / r['posts']:.0f} bytes a post, {r['nbytes'] / max(r['ngrams'], 1):.1f} a distinct 8-gram; "
                f"build peak {r['peak_build_mib'] - r['rss_before_mib']:,.0f} MiB above the corpus; save {r['save_s']:.2f} s"
            )
        else:
            console.print(
                f"python-set: build peak {r['peak_build_mib'] - r['rss_before_mib']:,.0f} MiB above the corpus"
            )

    ours = results.get("copyindex")
    if ours:
        med, p99 = ours["median_us"], ours["p99_us"]
        for label, rate in GEN_TOKENS_PER_S.items():
            per_post = GEN_TOKENS_PER_POST / rate
            console.print(
                f"generation ({label}, ~{rate:g} tokens/s, ~{GEN_TOKENS_PER_POST} tokens a post, from the issue): "
                f"~{per_post:.2f} s a post; the lookup is {med / 1e6 / per_post:.1e} of it (median), {p99 / 1e6 / per_post:.1e} (p99)"
            )
    if len(results) == 2:
        base = results["python-set"]
        if ours["probe_digest"] != base["probe_digest"]:
            console.print("[red]the two sides saw different probes[/red]")
        disagree = sum(a != b for a, b in zip(ours["verdicts"], base["verdicts"]))
        console.print(
            f"verdicts: {'the same on every probe' if not disagree else f'[red]{disagree} probes differ[/red]'}"
            f" ({ours['ngrams']:,} vs {base['ngrams']:,} distinct 8-grams; {ours['exact']:,} vs {base['exact']:,} distinct posts)"
        )
        ratios = {
            "memory (python-set bytes / CopyIndex bytes)": base["memory_bytes"] / ours["memory_bytes"],
            "build time (python-set s / CopyIndex s)": base["build_s"] / ours["build_s"],
            "lookup median (python-set µs / CopyIndex µs)": base["median_us"] / ours["median_us"],
            "lookup p99 (python-set µs / CopyIndex µs)": base["p99_us"] / ours["p99_us"],
        }
        for name, value in ratios.items():
            console.print(f"ratio {name}: [bold]{value:.2f}x[/bold]")


if __name__ == "__main__":
    main()
