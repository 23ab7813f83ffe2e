"""Sampling posts from a registered model: one post per sample, stopped at the end-of-post token (or the
first newline with one_line), never longer than 280 characters (cut at a word boundary), reproducible
with a seed. The prompt is prefixed like a training post ([end-of-post] (author) prompt), so a generated
post starts like a post. The copy filter re-draws a sample that repeats a training post (whole, or 8
words in a row) up to `max_redraws` times, then drops it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tweetforge.data.post import MAX_POST_CHARS
from tweetforge.errors import TweetforgeError
from tweetforge.registry.copy_index import CopyIndex
from tweetforge.training.models.tokenizers import author_token

if TYPE_CHECKING:
    from tweetforge.registry.versions import ModelVersion

SAMPLE_BATCH = 32
"""Samples per generate() call: bounds the KV cache (SmolLM2-135M: ~6 MB per sample at 100 tokens)."""
MAX_REDRAWS = 3
REDRAW_SEED_STEP = 1_000_003


class GenerationError(TweetforgeError):
    """A request the model cannot serve (unknown author, bad sampling parameter)."""


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 0
    repetition_penalty: float = 1.0
    one_line: bool = False
    max_chars: int = MAX_POST_CHARS
    max_tokens: int | None = None
    """New tokens at most (OpenAI's max_tokens); None: the model's own limit for a post."""

    def __post_init__(self) -> None:
        if self.max_tokens is not None and self.max_tokens < 1:
            raise GenerationError(f"max tokens {self.max_tokens} must be 1 or more")
        if not 0 < self.temperature <= 5:
            raise GenerationError(f"temperature {self.temperature} must be in (0, 5]")
        if not 0 < self.top_p <= 1:
            raise GenerationError(f"top-p {self.top_p} must be in (0, 1]")
        if self.top_k < 0:
            raise GenerationError(f"top-k {self.top_k} must be 0 (off) or more")
        if not 0 < self.repetition_penalty <= 10:
            raise GenerationError(f"repetition penalty {self.repetition_penalty} must be in (0, 10]")
        if not 1 <= self.max_chars <= MAX_POST_CHARS:
            raise GenerationError(f"max chars {self.max_chars} must be between 1 and {MAX_POST_CHARS}")


@dataclass
class Sample:
    text: str
    ended: bool
    """True when the model ended the post itself (end-of-post token) before any limit."""
    filtered_copies: int = 0
    """Earlier draws for this post that copied a training post and were thrown away."""
    new_tokens: int = 0
    """Tokens the model wrote for it, the end-of-post token included."""


@dataclass
class GeneratedPost:
    text: str
    model: str
    version: int
    seed: int
    author: str | None
    ended: bool
    filtered_copies: int = 0
    generated: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Generation:
    posts: list[GeneratedPost]
    copy_filter: bool
    filtered_copies: int = 0
    """Draws rejected as copies of training posts (each was re-drawn)."""
    dropped: int = 0
    """Posts still copying after the last re-draw: not returned, so `posts` may be fewer than asked."""

    def to_dict(self) -> dict[str, Any]:
        return {"posts": [p.to_dict() for p in self.posts], "copy_filter": self.copy_filter,
                "filtered_copies": self.filtered_copies, "dropped": self.dropped}


@lru_cache(maxsize=4)
def load_model(path: str):  # type: ignore[no-untyped-def]
    """(model, tokenizer, metadata) of an exported version directory; loaded once per process."""
    from tweetforge.training.models.causal_lm import load_pretrained

    directory = Path(path)
    model, tokenizer = load_pretrained(directory, [], lora=None)
    model.eval()
    decode_layout(model)
    info = json.loads((directory / "tweetforge.json").read_text())
    return model, tokenizer, info


def decode_layout(model: Any) -> None:
    """Store every linear layer's weight column-major (same values and shape: a transposed view of a
    contiguous copy). A decoding step multiplies a few rows by each weight, and MKL's GEMM for a few
    rows is several times faster against this layout: a 16-post SmolLM2-135M step takes 97 ms instead
    of 181 ms on 2 cores (benchmarks/RESULTS.md, serving). The other parameters are copied too, so that
    no tensor still points into the memory-mapped weights file: otherwise its pages stay resident
    beside the copies (one model: 1.43 GB instead of 0.92 GB)."""
    import torch

    copied: set[int] = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and id(module.weight) not in copied:
            module.weight.data = module.weight.data.t().contiguous().t()
            copied.add(id(module.weight))
    for parameter in model.parameters():
        if id(parameter) not in copied:
            parameter.data = parameter.data.clone()
            copied.add(id(parameter))


@lru_cache(maxsize=8)
def load_copy_index(path: str) -> CopyIndex:
    directory = Path(path) / "copy_index"
    if not (directory / "index.json").exists():
        raise GenerationError(f"{path} has no copy index (registry.ensure_copy_index builds it)")
    return CopyIndex.load(directory)


def cut_to_limit(text: str, limit: int = MAX_POST_CHARS) -> str:
    """At most `limit` characters, cut at the last word boundary (a post never ends mid-word)."""
    if len(text) <= limit:
        return text
    head = text[: limit + 1]
    space = head.rfind(" ")
    return (head[:space] if space > limit // 2 else text[:limit]).rstrip()


def post_prefix(tokenizer: Any, info: dict[str, Any], author: str | None) -> tuple[list[int], str | None]:
    """The token ids a post starts with ([end-of-post], and the author token for multi-author models),
    and the author written as."""
    authors: list[str] = info["params"]["authors"]
    prefix = [tokenizer.eos_token_id]
    if not info["params"].get("multi_author"):
        return prefix, authors[0] if authors else author
    ref = f"{info['name']}:{info['version']}"
    if author is None:
        raise GenerationError(f"{ref} writes as several authors: pass an author ({', '.join(authors)})")
    match = next((a for a in authors if a.lower() == author.lstrip("@").lower()), None)
    if match is None:
        raise GenerationError(f"{ref} was not trained on @{author.lstrip('@')} (authors: {', '.join(authors)})")
    return prefix + [tokenizer.convert_tokens_to_ids(author_token(match))], match


@dataclass(frozen=True)
class Job:
    """One prompt to sample n posts from, in a batch with others."""

    prefix: tuple[int, ...]
    prompt: str
    n: int


def sample(model: Any, tokenizer: Any, prefix: list[int], prompt: str, n: int, *, sampling: Sampling, seed: int,
           max_new_tokens: int) -> list[Sample]:
    """n posts from any Hugging Face causal LM (batch b of SAMPLE_BATCH seeded with seed + b)."""
    samples: list[Sample] = []
    for batch, start in enumerate(range(0, n, SAMPLE_BATCH)):
        job = Job(tuple(prefix), prompt, min(SAMPLE_BATCH, n - start))
        samples += sample_jobs(model, tokenizer, [job], sampling, seed + batch, max_new_tokens)[0]
    return samples


def pad_token(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def left_padded(sequences: list[list[int]], pad: int) -> tuple[Any, Any]:
    """(token ids, attention mask) of the sequences padded on the left to the longest: a transformer's
    attention mask hides the padding, so every row's last position is its own next-token prediction."""
    import torch

    width = max(len(ids) for ids in sequences)
    return (torch.tensor([[pad] * (width - len(ids)) + ids for ids in sequences]),
            torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in sequences]))


def encode_job(tokenizer: Any, job: Job) -> list[int]:
    return list(job.prefix) + (tokenizer(job.prompt, add_special_tokens=False)["input_ids"] if job.prompt else [])


def stop_tokens(tokenizer: Any, sampling: Sampling) -> list[int]:
    """The end-of-post token, and with one_line the newline tokens too."""
    stop = [tokenizer.eos_token_id]
    if sampling.one_line:
        stop += [i for i in (tokenizer.convert_tokens_to_ids(t) for t in ("\n", "Ċ")) if i is not None and i != tokenizer.unk_token_id]
    return stop


def new_token_budget(model: Any, prompt_tokens: int, max_new_tokens: int, sampling: Sampling) -> int:
    """max_new_tokens (or the request's max_tokens, when fewer), less whatever would run past the model's context."""
    max_new_tokens = min(max_new_tokens, sampling.max_tokens or max_new_tokens)
    context = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if not context:
        return max_new_tokens
    if prompt_tokens >= context:
        raise GenerationError(f"the prompt is {prompt_tokens} tokens; the model reads at most {context - 1}")
    return min(max_new_tokens, context - prompt_tokens)


def finish_sample(tokenizer: Any, prompt: str, new: list[int], stop: list[int], sampling: Sampling) -> Sample:
    """The post a sampled continuation makes: cut at the first stop token, decoded after the prompt,
    stripped and held to max_chars; `ended` only when the model ended it within the limit."""
    ended = any(t in stop for t in new)
    written = len(new)
    if ended:
        written = min(new.index(t) for t in stop if t in new) + 1
        new = new[: written - 1]
    text = prompt + tokenizer.decode(new, skip_special_tokens=True)
    if sampling.one_line:
        text = text.split("\n", 1)[0]
    text = text.strip()
    limited = cut_to_limit(text, sampling.max_chars)
    return Sample(limited, ended and limited == text, new_tokens=written)


def sample_jobs(model: Any, tokenizer: Any, jobs: list[Job], sampling: Sampling, seed: int, max_new_tokens: int,
                streamer: Any = None) -> list[list[Sample]]:
    """Several prompts' samples from one generate() call: prompts of different lengths are padded on the
    left, where a transformer's attention mask hides the padding. A recurrent model reads every token,
    so prompts that differ in length run as separate calls. A streamer (one sample only) receives the
    tokens as they are made."""
    import torch

    encoded = [encode_job(tokenizer, job) for job in jobs]
    recurrent = getattr(model.config, "model_type", "") == "tweetforge-lstm"
    if recurrent and len({len(ids) for ids in encoded}) > 1:
        results: list[list[Sample]] = [[] for _ in jobs]
        for length in sorted({len(ids) for ids in encoded}):
            chosen = [i for i, ids in enumerate(encoded) if len(ids) == length]
            for i, samples in zip(chosen, sample_jobs(model, tokenizer, [jobs[i] for i in chosen], sampling, seed, max_new_tokens)):
                results[i] = samples
        return results
    pad = pad_token(tokenizer)
    input_ids, attention_mask = left_padded([ids for ids, job in zip(encoded, jobs) for _ in range(job.n)], pad)
    width = input_ids.shape[1]
    stop = stop_tokens(tokenizer, sampling)
    max_new_tokens = new_token_budget(model, width, max_new_tokens, sampling)
    torch.manual_seed(seed)
    with torch.no_grad():
        output = model.generate(
            input_ids,
            attention_mask=attention_mask,
            do_sample=True,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k or None,
            repetition_penalty=sampling.repetition_penalty,
            max_new_tokens=max_new_tokens,
            eos_token_id=stop,
            pad_token_id=pad,
            streamer=streamer,
        )
    results: list[list[Sample]] = [[] for _ in jobs]
    owners = [i for i, job in enumerate(jobs) for _ in range(job.n)]
    for owner, row in zip(owners, output):
        results[owner].append(finish_sample(tokenizer, jobs[owner].prompt, row[width:].tolist(), stop, sampling))
    return results


def draw_without_copies(draw: Callable[[int, int], list[Sample]], n: int, seed: int, index: CopyIndex | None,
                        max_redraws: int = MAX_REDRAWS) -> tuple[list[Sample], int, int]:
    """(samples, draws rejected as copies, posts dropped): draw(count, seed) n samples, then re-draw the
    ones the index says copy a training post, up to max_redraws rounds; whatever still copies is dropped."""
    samples: list[Sample | None] = list(draw(n, seed))
    if index is None:
        return [s for s in samples if s is not None], 0, 0
    pending = [i for i, s in enumerate(samples) if s is not None and index.copies(s.text)]
    rejected = dict.fromkeys(pending, 1)
    for round_ in range(1, max_redraws + 1):
        if not pending:
            break
        still = []
        for i, redrawn in zip(pending, draw(len(pending), seed + round_ * REDRAW_SEED_STEP)):
            if index.copies(redrawn.text):
                rejected[i] += 1
                still.append(i)
            else:
                samples[i] = redrawn
        pending = still
    for i in pending:
        samples[i] = None
    kept = [replace(s, filtered_copies=rejected.get(i, 0)) for i, s in enumerate(samples) if s is not None]
    return kept, sum(rejected.values()), len(pending)


def generate_posts(
    version: ModelVersion,
    prompt: str = "",
    n: int = 1,
    *,
    author: str | None = None,
    sampling: Sampling | None = None,
    seed: int = 0,
    copy_filter: bool = True,
) -> Generation:
    """n posts from a registered version, through the copy filter unless copy_filter is off."""
    if n < 1:
        raise GenerationError("n must be at least 1")
    sampling = sampling or Sampling()
    model, tokenizer, info = load_model(str(version.path))
    prefix, author = post_prefix(tokenizer, info, author)
    max_new_tokens = info.get("generation", {}).get("max_new_tokens", 96)
    index = load_copy_index(str(version.path)) if copy_filter else None

    def draw(count: int, draw_seed: int) -> list[Sample]:
        return sample(model, tokenizer, prefix, prompt, count, sampling=sampling, seed=draw_seed, max_new_tokens=max_new_tokens)

    samples, filtered, dropped = draw_without_copies(draw, n, seed, index)
    posts = [GeneratedPost(s.text, version.name, version.version, seed, author, s.ended, s.filtered_copies) for s in samples]
    return Generation(posts, copy_filter, filtered, dropped)
