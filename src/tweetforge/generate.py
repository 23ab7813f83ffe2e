"""Sampling posts from a registered model: one post per sample, stopped at the end-of-post token (or the
first newline with one_line), never longer than 280 characters (cut at a word boundary), reproducible
with a seed. The prompt is prefixed like a training post ([end-of-post] (author) prompt), so a generated
post starts like a post."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from tweetforge.models.tokenizers import author_token
from tweetforge.post import MAX_POST_CHARS


class GenerationError(Exception):
    """A request the model cannot serve (unknown author, bad sampling parameter)."""


@dataclass
class GeneratedPost:
    text: str
    model: str
    version: int
    seed: int
    author: str | None
    ended: bool
    """True when the model ended the post itself (end-of-post token) before any limit."""
    generated: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=4)
def load_model(path: str):  # type: ignore[no-untyped-def]
    """(model, tokenizer, metadata) of an exported version directory; loaded once per process."""
    from tweetforge.models.causal_lm import load_pretrained

    directory = Path(path)
    model, tokenizer = load_pretrained(directory, [], lora=None)
    model.eval()
    info = json.loads((directory / "tweetforge.json").read_text())
    return model, tokenizer, info


def cut_to_limit(text: str, limit: int = MAX_POST_CHARS) -> str:
    """At most `limit` characters, cut at the last word boundary (a post never ends mid-word)."""
    if len(text) <= limit:
        return text
    head = text[: limit + 1]
    space = head.rfind(" ")
    return (head[:space] if space > limit // 2 else text[:limit]).rstrip()


def generate_posts(
    version: Any,
    prompt: str = "",
    n: int = 1,
    author: str | None = None,
    temperature: float = 1.0,
    top_p: float = 0.95,
    top_k: int = 0,
    repetition_penalty: float = 1.0,
    seed: int = 0,
    one_line: bool = False,
    max_chars: int = MAX_POST_CHARS,
) -> list[GeneratedPost]:
    import torch

    if not 0 < temperature <= 5:
        raise GenerationError(f"temperature {temperature} must be in (0, 5]")
    if not 0 < top_p <= 1:
        raise GenerationError(f"top-p {top_p} must be in (0, 1]")
    if n < 1:
        raise GenerationError("n must be at least 1")
    model, tokenizer, info = load_model(str(version.path))
    authors: list[str] = info["params"]["authors"]
    prefix = [tokenizer.eos_token_id]
    if info["params"].get("multi_author"):
        if author is None:
            raise GenerationError(f"{version.ref} writes as several authors: pass --author ({', '.join(authors)})")
        match = next((a for a in authors if a.lower() == author.lstrip("@").lower()), None)
        if match is None:
            raise GenerationError(f"{version.ref} was not trained on @{author.lstrip('@')} (authors: {', '.join(authors)})")
        prefix.append(tokenizer.convert_tokens_to_ids(author_token(match)))
        author = match
    else:
        author = authors[0] if authors else author
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    input_ids = torch.tensor([prefix + prompt_ids])
    stop = [tokenizer.eos_token_id]
    if one_line:
        stop += [i for i, token in ((tokenizer.convert_tokens_to_ids(t), t) for t in ("\n", "Ċ")) if i is not None and i != tokenizer.unk_token_id]
    max_new_tokens = info.get("generation", {}).get("max_new_tokens", 96)
    context = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if context:
        if input_ids.shape[1] >= context:
            raise GenerationError(f"the prompt is {input_ids.shape[1]} tokens; {version.ref} reads at most {context - 1}")
        max_new_tokens = min(max_new_tokens, context - input_ids.shape[1])
    torch.manual_seed(seed)
    with torch.no_grad():
        output = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k or None,
            repetition_penalty=repetition_penalty,
            num_return_sequences=n,
            max_new_tokens=max_new_tokens,
            eos_token_id=stop,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        )
    posts = []
    for row in output:
        new = row[len(prefix) + len(prompt_ids):].tolist()
        ended = any(t in stop for t in new)
        if ended:
            new = new[: min(new.index(t) for t in stop if t in new)]
        text = prompt + tokenizer.decode(new, skip_special_tokens=True)
        if one_line:
            text = text.split("\n", 1)[0]
        text = text.strip()
        limited = cut_to_limit(text, max_chars)
        posts.append(GeneratedPost(limited, version.name, version.version, seed, author, ended and limited == text))
    return posts
