"""OpenAI-compatible completions: the body and response shapes of OpenAI's /v1/completions (vLLM serves the
same), so one client works against `tweetforge serve` on a laptop and an OpenAI-compatible server on a GPU
cluster. Behind it is the native generation path: routing (a persona, a version, an experiment sticky by
`user`), the copy filter, the generation log for feedback. Every choice says it is generated: the choice's
`generated` field, the `tweetforge` provenance object, `system_fingerprint` and the X-Tweetforge-Generated
header."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from tweetforge.generation.generate import Sampling
from tweetforge.serving.dependencies import RateLimited, ServiceDep
from tweetforge.serving.protocol import (
    ERRORS,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    CompletionUsage,
    Provenance,
    link,
)
from tweetforge.serving.service import Served, Service, ServiceError

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERRORS)
GENERATED_HEADER = {"X-Tweetforge-Generated": "true"}


def continuation(prompt: str, post: str) -> str:
    """The post after its prompt (posts are stripped, so a prompt's own trailing space may be gone)."""
    for start in (prompt, prompt.rstrip(), prompt.strip()):
        if post.startswith(start):
            return post[len(start):]
    return post


def choice(prompt: str, post: str, ended: bool, stops: list[str], index: int) -> CompletionChoice:
    """OpenAI's choice: the continuation, ended before the first stop sequence; `stop` when the model
    ended the post or a stop sequence did, `length` when a limit did."""
    text = continuation(prompt, post)
    cuts = [text.index(s) for s in stops if s in text]
    if cuts:
        return CompletionChoice(text=text[: min(cuts)], index=index, finish_reason="stop")
    return CompletionChoice(text=text, index=index, finish_reason="stop" if ended else "length")


def fingerprint(ref: str) -> str:
    return f"tweetforge-generated-{ref}"


def sampling_of(body: CompletionRequest) -> Sampling:
    return Sampling(temperature=body.temperature, top_p=body.top_p, max_tokens=body.max_tokens)


FEEDBACK = link("/v1/feedback", {"generation_id": "$response.body#/tweetforge/generation_id", "event": "like"},
                "Feedback on the first prompt's completions")


@router.post("/completions", response_model=CompletionResponse, dependencies=[RateLimited],
             responses={200: {"content": {"text/event-stream": {}}, "links": {"feedback": FEEDBACK}}})
async def completions(body: CompletionRequest, response: Response, service: ServiceDep) -> CompletionResponse | StreamingResponse:
    """n completions of each prompt, from a persona (its champion), a version or an experiment's variant
    for `user`. With `stream`, Server-Sent Events in OpenAI's chunk format ending with `data: [DONE]`;
    each choice arrives whole once it has passed the copy filter (a post that copies a training post is
    drawn again before any of it is sent)."""
    prompts, stops, sampling = body.prompts(), body.stops(), sampling_of(body)
    if body.stream:
        return stream_completions(body, service, prompts, stops, sampling)
    user = body.user

    def one(prompt: str) -> Served:
        return service.generate(body.model, prompt, body.n, sampling=sampling, seed=body.seed, user_id=user)

    first = await run_in_threadpool(one, prompts[0])  # routes the user (a new id is made up once, then shared)
    user = first.user_id
    served = [first, *await asyncio.gather(*(run_in_threadpool(one, p) for p in prompts[1:]))]
    choices = [choice(prompt, post.text, post.ended, stops, i * body.n + j)
               for i, (prompt, s) in enumerate(zip(prompts, served)) for j, post in enumerate(s.posts)]
    completion_tokens = sum(post.new_tokens for s in served for post in s.posts)
    prompt_tokens = sum(s.prompt_tokens for s in served)
    response.headers.update(GENERATED_HEADER)
    return CompletionResponse(
        id=f"cmpl-{first.generation_id}", created=int(time.time()), model=first.version.ref, system_fingerprint=fingerprint(first.version.ref),
        choices=choices, usage=usage_of(prompt_tokens, completion_tokens),
        tweetforge=Provenance(generation_id=first.generation_id, generation_ids=[s.generation_id for s in served], ref=first.version.ref,
                              experiment=first.experiment, variant=first.variant, user_id=first.user_id,
                              filtered_copies=sum(s.filtered_copies for s in served), dropped=sum(s.dropped for s in served)),
    )


def stream_completions(body: CompletionRequest, service: Service, prompts: list[str], stops: list[str], sampling: Sampling) -> StreamingResponse:
    created, cmpl_id = int(time.time()), f"cmpl-{uuid.uuid4()}"
    first = service.stream(body.model, prompts[0], body.n, sampling=sampling, seed=body.seed, user_id=body.user)
    start = next(first)[1]  # routing errors become a JSON error response, not a broken stream
    user, ref = start["user_id"], f"{start['model']}:{start['version']}"

    def chunk(choices: list[dict], provenance: dict, usage: dict | None = None) -> str:
        data = {"id": cmpl_id, "object": "text_completion", "created": created, "model": ref, "system_fingerprint": fingerprint(ref),
                "choices": choices, "tweetforge": provenance, **({"usage": usage} if usage else {})}
        return f"data: {json.dumps(data)}\n\n"

    def events() -> Iterator[str]:
        done: list[dict] = []
        try:
            for i, prompt in enumerate(prompts):
                posts = first if i == 0 else service.stream(body.model, prompt, body.n, sampling=sampling, seed=body.seed, user_id=user)
                kept = 0
                for event, data in posts:
                    if event == "post":
                        made = choice(prompt, data["text"], data["ended"], stops, i * body.n + kept)
                        yield chunk([made.model_dump()], {"generated": True, "ref": ref})
                        kept += 1
                    elif event == "done":
                        done.append(data)
            provenance = Provenance(generation_id=done[0]["generation_id"], generation_ids=[d["generation_id"] for d in done], ref=ref,
                                    experiment=start["experiment"], variant=start["variant"], user_id=user,
                                    filtered_copies=sum(d["filtered_copies"] for d in done), dropped=sum(d["dropped"] for d in done))
            yield chunk([], provenance.model_dump())
            if body.stream_options and body.stream_options.include_usage:
                prompt_tokens = sum(d["prompt_tokens"] for d in done)
                completion_tokens = sum(post["new_tokens"] for d in done for post in d["posts"])
                yield chunk([], {"generated": True, "ref": ref}, usage_of(prompt_tokens, completion_tokens).model_dump())
            yield "data: [DONE]\n\n"
        except ServiceError as exc:
            yield f"data: {json.dumps({'error': {'code': exc.code, 'message': exc.message}})}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store", **GENERATED_HEADER})


def usage_of(prompt_tokens: int, completion_tokens: int) -> CompletionUsage:
    """OpenAI's usage object, for a response and for a stream's last chunk."""
    return CompletionUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens)
