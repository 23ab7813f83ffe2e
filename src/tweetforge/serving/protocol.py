"""Every request and response body of the HTTP API, and the error body, in one place. GraphQL validates its
arguments with the same models, so the two interfaces cannot drift apart."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from tweetforge.data.post import MAX_POST_CHARS
from tweetforge.generation.generate import Sample, Sampling


class GenerateRequest(BaseModel):
    model: str = Field(min_length=1, max_length=200, description="NAME (its champion), NAME:VERSION, NAME:ALIAS, or an experiment.")
    prompt: str = Field("", max_length=MAX_POST_CHARS, description="How each post starts.")
    author: str | None = Field(None, max_length=100, description="Multi-author models: write as this author.")
    n: int = Field(1, ge=1, le=10)
    temperature: float = Field(1.0, gt=0, le=5)
    top_p: float = Field(0.95, gt=0, le=1)
    max_chars: int = Field(MAX_POST_CHARS, ge=1, le=MAX_POST_CHARS)
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Same seed, same posts.")
    user_id: str | None = Field(None, min_length=1, max_length=100, description="Sticky experiment assignment; one is made up if absent.")


class ArenaRequest(BaseModel):
    experiment: str = Field(min_length=1, max_length=100, description="A running experiment.")
    prompt: str = Field("", max_length=MAX_POST_CHARS)
    author: str | None = Field(None, max_length=100)
    temperature: float = Field(1.0, gt=0, le=5)
    top_p: float = Field(0.95, gt=0, le=1)
    max_chars: int = Field(MAX_POST_CHARS, ge=1, le=MAX_POST_CHARS)
    user_id: str | None = Field(None, min_length=1, max_length=100)


def sampling_of(body: GenerateRequest | ArenaRequest) -> Sampling:
    return Sampling(temperature=body.temperature, top_p=body.top_p, max_chars=body.max_chars)


class Post(BaseModel):
    text: str
    generated: Literal[True] = True
    ended: bool = Field(description="The model ended the post itself, before any limit.")
    filtered_copies: int = Field(description="Draws for this post thrown away for copying a training post.")

    @classmethod
    def of(cls, sample: Sample) -> Post:
        return cls(text=sample.text, ended=sample.ended, filtered_copies=sample.filtered_copies)


class GenerateResponse(BaseModel):
    generation_id: str
    model: str
    version: int
    experiment: str | None
    variant: str | None
    user_id: str
    author: str | None
    posts: list[Post]
    filtered_copies: int
    dropped: int = Field(description="Posts still copying after the last re-draw, not returned.")


class ArenaOption(BaseModel):
    generation_id: str
    posts: list[Post]


class ArenaResponse(BaseModel):
    pair_id: str
    user_id: str
    options: list[ArenaOption] = Field(description="Two anonymous options; vote with feedback event 'choice' and winner_id.")


class FeedbackRequest(BaseModel):
    generation_id: str = Field(min_length=1, max_length=36)
    event: Literal["like", "dislike", "copy", "share", "choice"]
    winner_id: str | None = Field(None, max_length=36, description="choice: the generation that won; null for both bad.")
    user_id: str | None = Field(None, max_length=100)


class FeedbackResponse(BaseModel):
    id: int
    generation_id: str
    event: str
    committed: Literal[True] = True


class ModelInfo(BaseModel):
    ref: str
    name: str
    version: int
    kind: str
    aliases: list[str]
    authors: list[str]
    loaded: bool
    metrics: dict[str, Any]


class ExperimentCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    variants: list[str] = Field(min_length=2, description="NAME=MODEL:WEIGHT each, e.g. gpt=elon:4:50.")
    metric: Literal["like", "share", "arena"] = "like"
    min_sample: int = Field(1000, ge=1)
    alpha: float = Field(0.05, gt=0, lt=1)
    auto_promote: bool = False


class Pool(BaseModel):
    loaded: list[str]
    failed: dict[str, str] = Field(description="Each model asked for that could not be loaded, and why.")


class Readiness(Pool):
    ready: bool


class ErrorBody(BaseModel):
    code: str
    message: str
    fields: list[dict[str, str]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorResponse} for status in (401, 403, 404, 409, 422, 429, 503)}
"""The error statuses every route documents in OpenAPI."""
