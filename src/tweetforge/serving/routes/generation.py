"""Posts from a model: whole, streamed as Server-Sent Events, or as an arena pair for a vote."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from tweetforge.serving.dependencies import RateLimited, ServiceDep
from tweetforge.serving.protocol import (
    ERRORS,
    ArenaOption,
    ArenaRequest,
    ArenaResponse,
    GenerateRequest,
    GenerateResponse,
    Post,
    link,
    sampling_of,
)
from tweetforge.serving.service import ServiceError

router = APIRouter(prefix="/v1", tags=["generation"], responses=ERRORS)


FEEDBACK = {200: {"links": {"feedback": link("/v1/feedback", {"generation_id": "$response.body#/generation_id", "event": "like"},
                                              "Feedback on these posts")}}}


@router.post("/generate", response_model=GenerateResponse, dependencies=[RateLimited], responses=FEEDBACK)
async def generate(body: GenerateRequest, request: Request, service: ServiceDep) -> GenerateResponse:
    """Posts from a model (or an experiment's variant for this user), through the copy filter. A client
    that disconnects while its request waits for a batch takes the request out of the queue."""
    cancelled = threading.Event()

    def call() -> object:
        return service.generate(body.model, body.prompt, body.n, author=body.author, sampling=sampling_of(body), seed=body.seed,
                                user_id=body.user_id, cancelled=cancelled)

    # anyio's thread pool (40 threads), as sync endpoints use; asyncio.to_thread's default pool has cpu+4
    work = asyncio.ensure_future(run_in_threadpool(call))
    while not (await asyncio.wait({work}, timeout=0.1))[0]:
        if await request.is_disconnected():
            cancelled.set()
    served = work.result()
    return GenerateResponse(
        generation_id=served.generation_id, model=served.version.name, version=served.version.version, experiment=served.experiment,
        variant=served.variant, user_id=served.user_id, author=served.author, posts=[Post.of(s) for s in served.posts],
        filtered_copies=served.filtered_copies, dropped=served.dropped,
    )


@router.post("/generate/stream", responses={200: {"content": {"text/event-stream": {}}}}, dependencies=[RateLimited])
def generate_stream(body: GenerateRequest, service: ServiceDep) -> StreamingResponse:
    """The same as /v1/generate as Server-Sent Events: `start`, then per post `token` deltas (`discard` if
    the finished post copied a training post and is drawn again, `post` when kept), then `done` with the
    generation id. An error after the stream started arrives as an `error` event."""
    events = service.stream(body.model, body.prompt, body.n, author=body.author, sampling=sampling_of(body), seed=body.seed,
                            user_id=body.user_id)
    first = next(events)  # routing errors become a JSON error response, not a broken stream

    def encoded() -> Iterator[str]:
        try:
            for event, data in itertools.chain([first], events):
                yield f"event: {event}\ndata: {json.dumps(data)}\n\n"
        except ServiceError as exc:
            yield f"event: error\ndata: {json.dumps({'code': exc.code, 'message': exc.message})}\n\n"

    return StreamingResponse(encoded(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


@router.post("/arena", response_model=ArenaResponse, dependencies=[RateLimited])
def arena(body: ArenaRequest, service: ServiceDep) -> ArenaResponse:
    """Two posts from two variants of a running experiment, unlabelled and in a random order."""
    pair_id, user_id, shown = service.arena(body.experiment, body.prompt, author=body.author, sampling=sampling_of(body),
                                            user_id=body.user_id)
    options = [ArenaOption(generation_id=s.generation_id, posts=[Post.of(p) for p in s.posts]) for s in shown]
    return ArenaResponse(pair_id=pair_id, user_id=user_id, options=options)
