"""Evaluation on a snapshot's frozen test split, the same way for every subject: a registered version,
the untuned base it was fine-tuned from, or the order-2 word Markov chain trained on the same train split.

1. Likelihood: bits per character of the test posts (from the start of a post through its end-of-post
   token, so comparable across tokenizers), and token perplexity.
2. Generation: N posts (same seed and sampling for every subject), then distinct-n, self-BLEU, length
   distances to the real test posts, the share that ends properly, memorization against the subject's
   training posts (with the training post each copy came from), what the copy filter costs, and how
   well a classifier tells generated from real (and, multi-author, which author wrote it)."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine, Row, desc, insert, select

from tweetforge.data.post import MAX_POST_CHARS
from tweetforge.data.snapshots import (
    Snapshot,
    get_snapshot,
    read_snapshot,
    training_texts,
)
from tweetforge.db.engine import writing
from tweetforge.db.schema import evaluations
from tweetforge.errors import TweetforgeError
from tweetforge.evaluation.metrics import (
    LikelihoodTotals,
    attribution_accuracy,
    detectability,
    distinct_n,
    length_distance,
    self_bleu,
    word_count,
)
from tweetforge.evaluation.report import HEADLINE_METRICS, card_section
from tweetforge.generation.generate import (
    MAX_REDRAWS,
    SAMPLE_BATCH,
    Sample,
    Sampling,
    draw_without_copies,
    pad_token,
    post_prefix,
    sample,
)
from tweetforge.registry.copy_index import CopyIndex, words_of
from tweetforge.registry.versions import (
    ModelVersion,
    RegistryError,
    resolve,
    rewrite_card,
    update_metrics,
)

METRICS_VERSION = "1"
SCORE_BATCH = 8

Progress = Callable[[str, int, int], None]
"""(what, done, total)."""
EvaluationProgress = Callable[[str, str, int, int], None]
"""(subject, what, done, total): progress of several subjects."""


class EvaluationError(TweetforgeError):
    """An evaluation that cannot run; the message says why."""


@dataclass(frozen=True)
class EvalSettings:
    samples: int = 200
    seed: int = 1234
    max_test_posts: int = 2000
    max_redraws: int = MAX_REDRAWS

    def __post_init__(self) -> None:
        if self.samples < 2 or self.max_test_posts < 1:
            raise EvaluationError("an evaluation needs at least 2 generated posts (--samples) and 1 test post (--max-test-posts)")

    def key(self) -> str:
        payload = json.dumps({**asdict(self), "metrics_version": METRICS_VERSION}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class Evaluation:
    subject: str
    kind: str
    dataset: str
    dataset_hash: str
    settings: EvalSettings
    metrics: dict[str, Any]
    samples: list[dict[str, Any]]
    copies: list[dict[str, Any]]
    seconds: float
    created_at: datetime
    id: int | None = None

    def summary(self) -> dict[str, Any]:
        return {"subject": self.subject, "kind": self.kind, "dataset": self.dataset, "metrics": self.metrics,
                "copies": self.copies, "seconds": self.seconds, "created_at": self.created_at.isoformat(timespec="seconds")}


# ---------------------------------------------------------------- likelihood


def score_texts(model: Any, tokenizer: Any, texts: list[str], prefixes: list[list[int]], progress: Progress | None = None) -> LikelihoodTotals:
    """Summed negative log-likelihood of each text and its end-of-post token, given its prefix. Posts
    longer than the model's context are scored in consecutive windows that overlap by one token, so every
    token is predicted exactly once. Right padding needs no attention mask: a causal model's prediction
    at a position never sees the positions after it."""
    import torch

    eos = tokenizer.eos_token_id
    pad = pad_token(tokenizer)
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    context = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None) or 10**9
    rows: list[tuple[list[int], int]] = []  # (window of ids, first position predicted within it)
    for prefix, ids in zip(prefixes, encoded):
        sequence = prefix + ids + [eos]
        start = 0
        first = len(prefix)
        while True:
            window = sequence[start : start + context]
            rows.append((window, max(first - start, 1)))
            if start + context >= len(sequence):
                break
            start += context - 1
    rows.sort(key=lambda row: len(row[0]))
    nats, tokens = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for at in range(0, len(rows), SCORE_BATCH):
            batch = rows[at : at + SCORE_BATCH]
            width = max(len(window) for window, _ in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            targets = torch.full((len(batch), width), -100, dtype=torch.long)
            for r, (window, first) in enumerate(batch):
                ids[r, : len(window)] = torch.tensor(window)
                targets[r, first - 1 : len(window) - 1] = torch.tensor(window[first:])
            logits = model(input_ids=ids).logits.float()
            nats += torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-100, reduction="sum").item()
            tokens += int((targets != -100).sum())
            if progress:
                progress("scoring test posts", min(at + SCORE_BATCH, len(rows)), len(rows))
    return LikelihoodTotals(nats, tokens, sum(len(t) + 1 for t in texts))


def tokenizer_fingerprint(tokenizer: Any) -> str:
    vocabulary = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocabulary).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- subjects


class Subject(Protocol):
    """What evaluation needs of a model: score texts, and draw posts (as an author, when it takes one)."""

    name: str
    kind: str
    authors: list[str] | None
    """Authors it is conditioned on (multi-author models), else None."""
    tokenizer: str | None
    """Fingerprint of its vocabulary: token perplexities compare only between equal ones."""
    copy_index: CopyIndex
    training_texts: list[str]
    """What it was trained on, in the order copy_index rows refer to."""

    def score(self, texts: list[str], authors: list[str], progress: Progress | None) -> LikelihoodTotals: ...

    def draw(self, author: str | None) -> Callable[[int, int], list[Sample]]: ...


class NeuralSubject:
    def __init__(self, name: str, kind: str, model: Any, tokenizer: Any, *, info: dict[str, Any] | None, max_new_tokens: int,
                 training_texts: list[str], copy_index: CopyIndex):
        self.name, self.kind, self.model, self._tokenizer, self.info = name, kind, model, tokenizer, info
        self.max_new_tokens, self.training_texts, self.copy_index = max_new_tokens, training_texts, copy_index
        self.authors = list(info["params"]["authors"]) if info and info["params"].get("multi_author") else None
        self.tokenizer = tokenizer_fingerprint(tokenizer)

    def _prefix(self, author: str | None) -> list[int]:
        if self.info is None:
            return [self._tokenizer.eos_token_id]
        return post_prefix(self._tokenizer, self.info, author)[0]

    def score(self, texts: list[str], authors: list[str], progress: Progress | None) -> LikelihoodTotals:
        prefixes = [self._prefix(a if self.authors else None) for a in authors]
        return score_texts(self.model, self._tokenizer, texts, prefixes, progress)

    def draw(self, author: str | None) -> Callable[[int, int], list[Sample]]:
        prefix = self._prefix(author)
        return lambda count, seed: sample(self.model, self._tokenizer, prefix, "", count, sampling=Sampling(), seed=seed,
                                          max_new_tokens=self.max_new_tokens)


class MarkovSubject:
    def __init__(self, training_texts: list[str]):
        from tweetforge.evaluation.markov import MarkovChain

        self.name, self.kind, self.authors, self.tokenizer = "markov", "markov", None, None
        self.chain = MarkovChain(training_texts)
        self.training_texts = training_texts
        self.copy_index = CopyIndex.build(training_texts)

    def score(self, texts: list[str], authors: list[str], progress: Progress | None) -> LikelihoodTotals:
        return self.chain.score(texts)

    def draw(self, author: str | None) -> Callable[[int, int], list[Sample]]:
        return lambda count, seed: self.chain.sample(count, seed)


# ---------------------------------------------------------------- the evaluation


def held_out_posts(snapshot: Snapshot, authors: list[str], limit: int) -> tuple[list[str], list[str]]:
    """(texts, authors) of the snapshot's test posts by these authors, at most 280 characters (what a
    generated post can be), oversampled copies excluded."""
    import polars as pl


    frame = read_snapshot(snapshot, "test")
    if "copy" in frame.columns:
        frame = frame.filter(pl.col("copy") == 0)
    wanted = {a.lower() for a in authors}
    mine = frame.filter(pl.col("author").str.to_lowercase().is_in(list(wanted)) & (pl.col("text").str.len_chars() <= MAX_POST_CHARS))
    if mine.height == 0:
        present = sorted(set(frame["author"].to_list()))
        raise EvaluationError(
            f"dataset {snapshot.name} has no test posts by {', '.join('@' + a for a in authors)} "
            f"(its test split has {frame.height} posts" + (f" by {', '.join('@' + a for a in present[:5])})" if present else ")")
            + ": evaluate on a dataset of this author (--dataset)"
        )
    mine = mine.head(limit)
    return mine["text"].to_list(), mine["author"].to_list()


def longest_shared_run(a: str, b: str) -> int:
    """Longest run of consecutive words (copy-index words) the two texts share."""
    x, y = words_of(a), words_of(b)
    best, previous = 0, [0] * (len(y) + 1)
    for i in range(1, len(x) + 1):
        current = [0] * (len(y) + 1)
        for j in range(1, len(y) + 1):
            if x[i - 1] == y[j - 1]:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def _generate(subject: Subject, authors: list[str], settings: EvalSettings, progress: Progress | None) -> list[tuple[Sample, str | None]]:
    """settings.samples posts, split evenly over the authors of a multi-author subject."""
    conditioned = subject.authors or [None]
    share = [settings.samples // len(conditioned) + (1 if i < settings.samples % len(conditioned) else 0) for i in range(len(conditioned))]
    drawn: list[tuple[Sample, str | None]] = []
    for i, (author, count) in enumerate(zip(conditioned, share)):
        draw = subject.draw(author)
        for start in range(0, count, SAMPLE_BATCH):
            batch = draw(min(SAMPLE_BATCH, count - start), settings.seed + 7919 * i + start)
            drawn += [(s, author) for s in batch]
            if progress:
                progress("generating posts", len(drawn), settings.samples)
    return drawn


def evaluate_subject(subject: Subject, snapshot: Snapshot, authors: list[str], settings: EvalSettings,
                     progress: Progress | None = None) -> Evaluation:
    started = time.perf_counter()
    texts, text_authors = held_out_posts(snapshot, authors, settings.max_test_posts)
    scored = subject.score(texts, text_authors, progress)
    scoring_seconds = time.perf_counter() - started

    generation_start = time.perf_counter()
    drawn = _generate(subject, authors, settings, progress)
    generation_seconds = time.perf_counter() - generation_start
    generated = [s.text for s, _ in drawn]
    nonempty = [t for t in generated if t.strip()]

    matches = [subject.copy_index.find(text) for text in generated]
    copies = []
    for (_, author), text, match in zip(drawn, generated, matches):
        if match is None:
            continue
        source = subject.training_texts[match.post]
        run = longest_shared_run(text, source)
        if match.kind == "exact" or run >= 8:  # a hash collision would fail this check
            copies.append({"generated": text, "training_post": source, "kind": match.kind, "words_in_a_row": run, "author": author})
    exact = sum(1 for c in copies if c["kind"] == "exact")

    # what the copy filter delivers and costs: the posts the index flags are re-drawn as generation would
    flagged = [match is not None for match in matches]
    delivered = [text for text, bad in zip(generated, flagged) if not bad]
    extra_draws = dropped = 0
    flagged_by_author: dict[str | None, int] = {}
    for (_, author), bad in zip(drawn, flagged):
        if bad:
            flagged_by_author[author] = flagged_by_author.get(author, 0) + 1
    for author, count in flagged_by_author.items():
        draw = subject.draw(author)

        def counted(n: int, seed: int, draw=draw) -> list[Sample]:
            nonlocal extra_draws
            extra_draws += n
            return draw(n, seed)

        kept, _, lost = draw_without_copies(counted, count, settings.seed + 1, subject.copy_index, settings.max_redraws)
        delivered += [s.text for s in kept]
        dropped += lost

    real_chars = [len(t) for t in texts]
    real_words = [word_count(t) for t in texts]
    chars = length_distance([len(t) for t in generated], real_chars)
    words = length_distance([word_count(t) for t in generated], real_words)
    metrics: dict[str, Any] = {
        "test_posts": len(texts),
        "bits_per_char": scored.bits_per_character,
        "token_perplexity": scored.token_perplexity,
        "tokenizer": subject.tokenizer,
        "samples": len(generated),
        "distinct_1": distinct_n(generated, 1),
        "distinct_2": distinct_n(generated, 2),
        "self_bleu": self_bleu(generated),
        "length_chars_wasserstein": chars["wasserstein"],
        "length_chars_ks": chars["ks"],
        "length_words_wasserstein": words["wasserstein"],
        "length_words_ks": words["ks"],
        "mean_chars": sum(len(t) for t in generated) / len(generated),
        "real_mean_chars": sum(real_chars) / len(real_chars),
        "ended_share": sum(1 for s, _ in drawn if s.ended) / len(drawn),
        "empty_share": 1 - len(nonempty) / len(generated),
        "copy_rate": len(copies) / len(generated),
        "exact_copy_rate": exact / len(generated),
        "copy_rate_filtered": sum(subject.copy_index.copies(t) for t in delivered) / len(generated),
        "filter_extra_draws": extra_draws,
        "filter_dropped_share": dropped / len(generated),
        "detectability": detectability(texts, nonempty, settings.seed) if min(len(texts), len(nonempty)) >= 5 else None,
        "scoring_seconds": round(scoring_seconds, 1),
        "generation_seconds": round(generation_seconds, 1),
    }
    train_texts, train_authors = training_texts(snapshot, subject.authors) if subject.authors else ([], [])
    if len(set(train_authors)) > 1:
        metrics["attribution_accuracy"] = attribution_accuracy(train_texts, train_authors, generated, [a for _, a in drawn], settings.seed)
        metrics["attribution_accuracy_real"] = attribution_accuracy(train_texts, train_authors, texts, text_authors, settings.seed)
    return Evaluation(
        subject=subject.name, kind=subject.kind, dataset=snapshot.name, dataset_hash=snapshot.content_hash, settings=settings,
        metrics=metrics, samples=[{"text": s.text, "ended": s.ended, "author": a} for s, a in drawn], copies=copies,
        seconds=round(time.perf_counter() - started, 1), created_at=datetime.now(),
    )


# ---------------------------------------------------------------- stored results


def save_evaluation(engine: Engine, evaluation: Evaluation) -> Evaluation:
    with writing(engine) as conn:
        result = conn.execute(insert(evaluations).values(
            subject=evaluation.subject, kind=evaluation.kind, dataset=evaluation.dataset, dataset_hash=evaluation.dataset_hash,
            settings_hash=evaluation.settings.key(), settings=asdict(evaluation.settings), metrics=_finite(evaluation.metrics),
            samples=evaluation.samples, copies=evaluation.copies, seconds=evaluation.seconds, created_at=evaluation.created_at,
        ))
        evaluation.id = result.inserted_primary_key[0]
    return evaluation


def _finite(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN or infinity: store them as null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


def _from_row(row: Row) -> Evaluation:
    return Evaluation(
        subject=row.subject, kind=row.kind, dataset=row.dataset, dataset_hash=row.dataset_hash, settings=EvalSettings(**row.settings),
        metrics=row.metrics, samples=row.samples, copies=row.copies, seconds=row.seconds, created_at=row.created_at, id=row.id,
    )


def latest_evaluation(engine: Engine, subject: str, dataset_hash: str, settings: EvalSettings | None = None) -> Evaluation | None:
    query = select(evaluations).where(evaluations.c.subject == subject, evaluations.c.dataset_hash == dataset_hash)
    if settings is not None:
        query = query.where(evaluations.c.settings_hash == settings.key())
    with engine.connect() as conn:
        row = conn.execute(query.order_by(desc(evaluations.c.id)).limit(1)).first()
    return _from_row(row) if row else None


def evaluations_of(engine: Engine, subject: str) -> list[Evaluation]:
    """The latest evaluation of the subject on each dataset it was evaluated on."""
    with engine.connect() as conn:
        rows = conn.execute(select(evaluations).where(evaluations.c.subject == subject).order_by(evaluations.c.id)).all()
    latest: dict[str, Evaluation] = {}
    for row in rows:
        latest[row.dataset] = _from_row(row)
    return list(latest.values())


BASELINES = ("markov", "base")


def evaluation_sections(engine: Engine, version: ModelVersion) -> list[str]:
    """The model card's results: per dataset the version was evaluated on, its latest evaluation beside the
    baselines evaluated on the same split with the same settings."""
    lines: list[str] = []
    for evaluation in evaluations_of(engine, version.ref):
        rows = [(f"**{version.ref}**", evaluation.metrics)]
        rows += [(f"{b.subject} (baseline)", b.metrics) for b in evaluated_alongside(engine, version, evaluation)]
        lines += card_section(evaluation, rows)
    return lines


def record_evaluation(engine: Engine, version: ModelVersion, evaluation: Evaluation) -> ModelVersion:
    """Put an evaluation's headline numbers on the registry row (metrics.test[dataset]), and rewrite
    tweetforge.json and the model card so that both stay true for the version."""
    headline = {k: evaluation.metrics.get(k) for k in HEADLINE_METRICS}
    headline["evaluated_at"] = evaluation.created_at.isoformat(timespec="seconds")
    updated = update_metrics(engine, version, lambda metrics: {**metrics, "test": {**metrics.get("test", {}), evaluation.dataset: headline}})
    rewrite_card(engine, updated, evaluation_sections(engine, updated))
    return updated


def evaluated_alongside(engine: Engine, version: ModelVersion, evaluation: Evaluation, others: list[str] | None = None) -> list[Evaluation]:
    """The latest evaluations of `others`, then of the version's baselines, on the same test split with the
    same settings as `evaluation` (those never evaluated so are left out)."""
    found = (latest_evaluation(engine, subject, evaluation.dataset_hash, evaluation.settings)
             for subject in (others or []) + _baseline_subjects(engine, version))
    return [e for e in found if e is not None]


def _baseline_subjects(engine: Engine, version: ModelVersion) -> list[str]:
    names = ["markov"]
    base = untuned_base_of(engine, version)
    if base is not None:
        names.append(base)
    return names


def untuned_base_of(engine: Engine, version: ModelVersion) -> str | None:
    """The subject a version was fine-tuned from: 'base:<model>', the registered version it continued, or None."""

    if version.params.get("from_model"):
        try:
            return resolve(engine, version.params["from_model"]).ref
        except RegistryError:
            return None
    base = version.params.get("untuned_base")
    return f"base:{base}" if base else None


def load_subject(engine: Engine, home: Path, ref: str, snapshot: Snapshot, reference: ModelVersion | None, authors: list[str]) -> Subject:
    """'markov', 'base' (the untuned base of the reference model), 'base:<hub id or directory>', or a
    registered version."""
    from tweetforge.generation.generate import load_copy_index, load_model
    from tweetforge.registry.versions import ensure_copy_index

    max_new_tokens = (reference_info(reference) or {}).get("generation", {}).get("max_new_tokens", 96)
    if ref == "markov":
        return MarkovSubject(training_texts(snapshot, authors)[0])
    if ref == "base":
        if reference is None:
            raise EvaluationError("'base' means the untuned base of the first registered model named: name one, or use base:<model>")
        base = untuned_base_of(engine, reference)
        if base is None:
            raise EvaluationError(f"{reference.ref} ({reference.kind}) was not fine-tuned from a base model; compare it with markov")
        ref = base
    if ref.startswith("base:"):
        from tweetforge.training.models.base import resolve_base
        from tweetforge.training.models.causal_lm import load_pretrained

        resolved = resolve_base(ref.removeprefix("base:"), home / "cache" / "base")
        model, tokenizer = load_pretrained(resolved.path, [], lora=None)
        texts = training_texts(snapshot, authors)[0]
        return NeuralSubject(ref, "base", model, tokenizer, info=None, max_new_tokens=max_new_tokens, training_texts=texts,
                             copy_index=CopyIndex.build(texts))
    version = resolve(engine, ref)
    ensure_copy_index(engine, version)
    model, tokenizer, info = load_model(str(version.path))
    own = get_snapshot(engine, version.dataset)
    return NeuralSubject(version.ref, version.kind, model, tokenizer, info=info, max_new_tokens=info.get("generation", {}).get("max_new_tokens", 96),
                         training_texts=training_texts(own)[0], copy_index=load_copy_index(str(version.path)))


def reference_info(version: ModelVersion | None) -> dict[str, Any] | None:
    if version is None:
        return None
    return json.loads((version.path / "tweetforge.json").read_text())


def track(evaluation: Evaluation, home: Path, report_to: str, training_run: str | None) -> None:
    """Log an evaluation to the tracker as its own run in the training runs' project."""
    import re

    from tweetforge.training.tracking import Tracker

    name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"eval-{evaluation.subject}-{evaluation.dataset}-{evaluation.created_at:%Y%m%d-%H%M%S}")
    config = {"subject": evaluation.subject, "dataset": evaluation.dataset, "dataset_hash": evaluation.dataset_hash,
              "training_run": training_run, **asdict(evaluation.settings)}
    tracker = Tracker(report_to, home, name, config)
    tracker.log({f"test/{k}": float(v) for k, v in evaluation.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}, step=0)
    tracker.finish()


@dataclass
class Comparison:
    snapshot: Snapshot
    authors: list[str]
    evaluations: list[Evaluation]
    """In the order of the refs asked for."""

    def real_texts(self) -> list[str]:
        return held_out_posts(self.snapshot, self.authors, self.evaluations[0].settings.max_test_posts)[0]


def run_evaluations(engine: Engine, home: Path, refs: list[str], dataset: str | None, settings: EvalSettings, *,
                    fresh: tuple[str, ...] = (), report_to: str = "trackio", progress: EvaluationProgress | None = None
                    ) -> Comparison:
    """Evaluate each subject on one dataset's test split (of the first registered model's authors); reuse
    a stored evaluation of the same subject, split and settings unless the ref is in `fresh`. Registered
    versions get the results on their row and card."""

    registered = {}
    for ref in refs:
        if ref not in ("markov", "base") and not ref.startswith("base:"):
            try:
                registered[ref] = resolve(engine, ref)
            except RegistryError as exc:
                raise EvaluationError(str(exc)) from None
    reference = next(iter(registered.values()), None)
    if dataset is None and reference is None:
        raise EvaluationError("no registered model named: pass --dataset to say which test split to use")
    snapshot = get_snapshot(engine, dataset or reference.dataset)
    authors = reference.params["authors"] if reference else sorted(set(training_texts(snapshot)[1]))
    results, recorded = [], []
    for ref in refs:
        version = registered.get(ref)
        name = version.ref if version else ref
        if ref == "base" and reference is not None:
            name = untuned_base_of(engine, reference) or ref
        cached = None if ref in fresh else latest_evaluation(engine, name, snapshot.content_hash, settings)
        if cached is not None:
            results.append(cached)
            continue
        subject = load_subject(engine, home, ref, snapshot, reference, authors)

        def report(what: str, done: int, total: int, subject_name: str = subject.name) -> None:
            if progress:
                progress(subject_name, what, done, total)

        evaluation = save_evaluation(engine, evaluate_subject(subject, snapshot, authors, settings, report))
        if subject.kind != "markov":
            track(evaluation, home, report_to, version.run_id if version else None)
        results.append(evaluation)
        if version is not None:
            recorded.append((version, evaluation))
    for version, evaluation in recorded:  # after the baselines, so that the card's table has them
        record_evaluation(engine, version, evaluation)
    return Comparison(snapshot, authors, results)
