"""Every request and response body of the HTTP API, and the error body, in one place. GraphQL validates its
arguments with the same models, so the two interfaces cannot drift apart."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from tweetforge.data.post import MAX_POST_CHARS
from tweetforge.generation.generate import Sample, Sampling

MIN_TEMPERATURE = 0.01
"""Below it, sampling is greedy in all but name, and logits divided by a vanishing temperature overflow to inf."""
MIN_TOP_P = 1e-6
"""Below it the nucleus is the most probable token alone all the same, and a top-p under float32's range is 0."""


class GenerateRequest(BaseModel):
    model: str = Field(min_length=1, max_length=200, description="NAME (its champion), NAME:VERSION, NAME:ALIAS, or an experiment.")
    prompt: str = Field("", max_length=MAX_POST_CHARS, description="How each post starts.")
    author: str | None = Field(None, max_length=100, description="Multi-author models: write as this author.")
    n: int = Field(1, ge=1, le=10)
    temperature: float = Field(1.0, ge=MIN_TEMPERATURE, le=5)
    top_p: float = Field(0.95, ge=MIN_TOP_P, le=1)
    max_chars: int = Field(MAX_POST_CHARS, ge=1, le=MAX_POST_CHARS)
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Same seed, same posts.")
    user_id: str | None = Field(None, min_length=1, max_length=100, description="Sticky experiment assignment; one is made up if absent.")


class ArenaRequest(BaseModel):
    experiment: str = Field(min_length=1, max_length=100, description="A running experiment.")
    prompt: str = Field("", max_length=MAX_POST_CHARS)
    author: str | None = Field(None, max_length=100)
    temperature: float = Field(1.0, ge=MIN_TEMPERATURE, le=5)
    top_p: float = Field(0.95, ge=MIN_TOP_P, le=1)
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
    """OpenAI's model object (id, object, created, owned_by) with tweetforge's fields. `id` is what a request
    names: a version (NAME:VERSION), a persona (NAME: its champion) or a running experiment."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tweetforge"
    ref: str = Field(description="The version this id reaches now (for an experiment: its first variant's).")
    name: str
    version: int
    kind: str = Field(description="causal-lm, scratch, lstm; 'experiment' for an experiment's entry.")
    aliases: list[str]
    authors: list[str]
    loaded: bool
    adapter: bool = Field(description="Served as a LoRA adapter on a shared base.")
    metrics: dict[str, Any]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelInfo]


class StreamOptions(BaseModel):
    include_usage: bool = Field(False, description="A last chunk, before [DONE], carries the usage of the whole request.")


class CompletionRequest(BaseModel):
    """OpenAI's /v1/completions body. Parameters tweetforge cannot honour are refused by name, not ignored."""

    model: str = Field(min_length=1, max_length=200, description="A persona (NAME), NAME:VERSION, NAME:ALIAS or an experiment.")
    prompt: str | list[str] = Field("", description="How each post starts; a list asks for n completions of each.")
    max_tokens: int | None = Field(16, ge=1, le=1024, description="New tokens at most (OpenAI's default 16); null: up to the end of the post.")
    temperature: float = Field(1.0, ge=MIN_TEMPERATURE, le=5, description="OpenAI allows 0 (greedy); tweetforge samples, so it must be at "
                               f"least {MIN_TEMPERATURE}.")
    top_p: float = Field(1.0, ge=MIN_TOP_P, le=1)
    n: int = Field(1, ge=1, le=10)
    stop: str | list[str] | None = Field(None, description="Up to 4 sequences; the text ends before the first one.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    user: str | None = Field(None, min_length=1, max_length=100, description="Sticky experiment assignment.")
    echo: bool = False
    logprobs: int | None = None
    best_of: int | None = None
    suffix: str | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt_sizes(cls, prompt: str | list[str]) -> str | list[str]:
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not 1 <= len(prompts) <= 16 or any(len(p) > MAX_POST_CHARS for p in prompts):
            raise ValueError(f"1 to 16 prompts of at most {MAX_POST_CHARS} characters each")
        return prompt

    @field_validator("stop")
    @classmethod
    def _stop_sequences(cls, stop: str | list[str] | None) -> str | list[str] | None:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("at most 4 non-empty sequences")
        return stop

    @model_validator(mode="after")
    def _supported(self) -> CompletionRequest:
        asked = {"echo": self.echo, "logprobs": self.logprobs is not None, "best_of": self.best_of not in (None, 1), "suffix": bool(self.suffix),
                 "presence_penalty": self.presence_penalty != 0,
                 "frequency_penalty": self.frequency_penalty != 0, "logit_bias": bool(self.logit_bias)}
        if unsupported := [name for name, set_ in asked.items() if set_]:
            raise ValueError(f"not supported by tweetforge: {', '.join(unsupported)}")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options: only with stream")
        return self

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else self.prompt

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class CompletionChoice(BaseModel):
    text: str = Field(description="The continuation after the prompt; prompt + text is the post.")
    index: int
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None
    generated: Literal[True] = True


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Provenance(BaseModel):
    """What tweetforge adds to an OpenAI response: the text is machine-generated, and where it came from."""

    generated: Literal[True] = True
    generation_id: str = Field(description="For feedback (POST /v1/feedback): the first prompt's generation.")
    generation_ids: list[str] = Field(description="One generation per prompt, in order.")
    ref: str
    experiment: str | None
    variant: str | None
    user_id: str
    filtered_copies: int
    dropped: int


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str = Field(description="tweetforge-generated-<ref>: the text is machine-generated.")
    choices: list[CompletionChoice]
    usage: CompletionUsage | None
    tweetforge: Provenance


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


def link(path: str, body: dict[str, Any], description: str) -> dict[str, Any]:
    """An OpenAPI link: which values of a response fill the body of the next request (POST `path`); clients and
    schemathesis's stateful mode follow them."""
    return {"operationRef": "#/paths/" + path.replace("/", "~1") + "/post", "requestBody": body, "description": description}


ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 408, 409, 413, 422, 429, 503)}
"""The error statuses every route documents in OpenAPI."""
