"""The HTTP API: typed requests and responses, errors as structured JSON, admin operations behind a bearer
token, a per-client rate limit on generation, and Prometheus metrics. Every handler is a thin call into
the service layer (service.py)."""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import threading
import time
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field

from tweetforge.data.post import MAX_POST_CHARS
from tweetforge.experiments.ab import json_safe
from tweetforge.generation.generate import Sampling
from tweetforge.serving.service import Service, ServiceError

MAX_BODY_BYTES = 64 * 1024


# ---------------------------------------------------------------- request and response models


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


class Post(BaseModel):
    text: str
    generated: Literal[True] = True
    ended: bool = Field(description="The model ended the post itself, before any limit.")
    filtered_copies: int = Field(description="Draws for this post thrown away for copying a training post.")


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


class ArenaRequest(BaseModel):
    experiment: str = Field(min_length=1, max_length=100, description="A running experiment.")
    prompt: str = Field("", max_length=MAX_POST_CHARS)
    author: str | None = Field(None, max_length=100)
    temperature: float = Field(1.0, gt=0, le=5)
    top_p: float = Field(0.95, gt=0, le=1)
    max_chars: int = Field(MAX_POST_CHARS, ge=1, le=MAX_POST_CHARS)
    user_id: str | None = Field(None, min_length=1, max_length=100)


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


class ErrorBody(BaseModel):
    code: str
    message: str
    fields: list[dict[str, str]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


# ---------------------------------------------------------------- metrics


class Metrics:
    def __init__(self, service_depths: Any):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("tweetforge_requests_total", "HTTP requests", ["path", "status"], registry=self.registry)
        self.latency = Histogram("tweetforge_request_seconds", "Request latency", ["path"], registry=self.registry,
                                 buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64))
        self.batch_size = Histogram("tweetforge_batch_posts", "Posts decoded together: per decoding step (per generate() call for recurrent models)", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64))
        self.tokens = Counter("tweetforge_generated_tokens_total", "Tokens generated", registry=self.registry)
        self.tokens_per_second = Gauge("tweetforge_tokens_per_second", "Tokens/s of the last batch", registry=self.registry)
        queue_depth = Gauge("tweetforge_queue_depth", "Requests waiting for a batch", ["model"], registry=self.registry)
        self._depths, self._queue_depth = service_depths, queue_depth

    def observe_batch(self, posts: int, seconds: float, tokens: int) -> None:
        self.batch_size.observe(posts)
        self.tokens.inc(tokens)
        if seconds:
            self.tokens_per_second.set(tokens / seconds)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        for ref, depth in self._depths().items():
            self._queue_depth.labels(ref).set(depth)
        return generate_latest(self.registry)


class RateLimiter:
    """A token bucket per client: `per_minute` requests, refilled continuously."""

    def __init__(self, per_minute: int):
        self.per_minute, self._buckets, self._lock = per_minute, {}, threading.Lock()

    def check(self, client: str) -> None:
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * self.per_minute / 60)
            if tokens < 1:
                self._buckets[client] = (tokens, now)
                wait = int((1 - tokens) * 60 / self.per_minute) + 1
                raise ServiceError(429, "rate_limited", f"more than {self.per_minute} generation requests a minute; retry in {wait} s",
                                   retry_after=wait)
            self._buckets[client] = (tokens - 1, now)


# ---------------------------------------------------------------- the app


def _sampling(body: GenerateRequest) -> Sampling:
    return Sampling(temperature=body.temperature, top_p=body.top_p, max_chars=body.max_chars)


def error_response(status: int, code: str, message: str, fields: list[dict[str, str]] | None = None,
                   retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    body = ErrorResponse(error=ErrorBody(code=code, message=message, fields=fields))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


ERRORS = {status: {"model": ErrorResponse} for status in (401, 403, 404, 422, 429, 503)}


def create_app(service: Service, admin_token: str | None = None, cors_origins: list[str] | None = None,
               rate_limit_per_minute: int = 120, ui: bool = False) -> FastAPI:
    """The API under /v1 (OpenAPI at /docs), GraphQL at /graphql; with `ui`, the web UI at /."""
    app = FastAPI(title="tweetforge", version="1", description="Posts written by models trained on someone's posts. "
                  "Every generated post is marked `generated: true`.")
    metrics = Metrics(lambda: {m.version.ref: m.batcher.depth() for m in service.loaded()})
    service.batch_observers.append(metrics.observe_batch)
    limiter = RateLimiter(rate_limit_per_minute)
    app.state.service, app.state.metrics = service, metrics
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["GET", "POST"], allow_headers=["*"])

    @app.middleware("http")
    async def measure_and_limit(request: Request, call_next):  # type: ignore[no-untyped-def]
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return error_response(413, "too_large", f"request body of {length} bytes; the limit is {MAX_BODY_BYTES}")
        started = time.perf_counter()
        response = await call_next(request)
        path = getattr(request.scope.get("route"), "path", "unmatched")
        metrics.requests.labels(path, str(response.status_code)).inc()
        metrics.latency.labels(path).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(ServiceError)
    async def service_error(_request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, retry_after=exc.retry_after)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [{"field": ".".join(str(p) for p in e["loc"] if p != "body"), "message": e["msg"]} for e in exc.errors()]
        summary = "; ".join(f"{f['field'] or 'body'}: {f['message']}" for f in fields)
        return error_response(422, "validation_error", summary, fields)

    def admin(authorization: Annotated[str | None, Header()] = None) -> None:
        if not admin_token:
            raise ServiceError(403, "admin_disabled", "admin operations are off: set TWEETFORGE_ADMIN_TOKEN on the server")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), admin_token.encode()):
            raise ServiceError(401, "unauthorized", "admin operations need the header Authorization: Bearer <TWEETFORGE_ADMIN_TOKEN>")

    @app.post("/v1/generate", response_model=GenerateResponse, responses=ERRORS, tags=["generation"])
    async def generate(body: GenerateRequest, request: Request) -> GenerateResponse:
        """Posts from a model (or an experiment's variant for this user), through the copy filter. A client
        that disconnects while its request waits for a batch takes the request out of the queue."""
        limiter.check(body.user_id or (request.client.host if request.client else "unknown"))
        cancelled = threading.Event()
        # anyio's thread pool (40 threads), as sync endpoints use; asyncio.to_thread's default pool has cpu+4
        work = asyncio.ensure_future(run_in_threadpool(service.generate, body.model, body.prompt, body.n, body.author, _sampling(body),
                                                       body.seed, body.user_id, cancelled))
        while not (await asyncio.wait({work}, timeout=0.1))[0]:
            if await request.is_disconnected():
                cancelled.set()
        served = work.result()
        return GenerateResponse(
            generation_id=served.generation_id, model=served.version.name, version=served.version.version, experiment=served.experiment,
            variant=served.variant, user_id=served.user_id, author=served.author,
            posts=[Post(text=s.text, ended=s.ended, filtered_copies=s.filtered_copies) for s in served.posts],
            filtered_copies=served.filtered_copies, dropped=served.dropped,
        )

    @app.post("/v1/generate/stream", responses={200: {"content": {"text/event-stream": {}}}, **ERRORS}, tags=["generation"])
    def generate_stream(body: GenerateRequest, request: Request) -> StreamingResponse:
        """The same as /v1/generate as Server-Sent Events: `start`, then per post `token` deltas (`discard` if
        the finished post copied a training post and is drawn again, `post` when kept), then `done` with the
        generation id. An error after the stream started arrives as an `error` event."""
        limiter.check(body.user_id or (request.client.host if request.client else "unknown"))
        events = service.stream(body.model, body.prompt, body.n, body.author, _sampling(body), body.seed, body.user_id)
        first = next(events)  # routing errors become a JSON error response, not a broken stream

        def encoded() -> Iterator[str]:
            try:
                for event, data in itertools.chain([first], events):
                    yield f"event: {event}\ndata: {json.dumps(data)}\n\n"
            except ServiceError as exc:
                yield f"event: error\ndata: {json.dumps({'code': exc.code, 'message': exc.message})}\n\n"

        return StreamingResponse(encoded(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    @app.post("/v1/arena", response_model=ArenaResponse, responses=ERRORS, tags=["generation"])
    def arena(body: ArenaRequest, request: Request) -> ArenaResponse:
        """Two posts from two variants of a running experiment, unlabelled and in a random order."""
        limiter.check(body.user_id or (request.client.host if request.client else "unknown"))
        sampling = Sampling(temperature=body.temperature, top_p=body.top_p, max_chars=body.max_chars)
        pair_id, user_id, shown = service.arena(body.experiment, body.prompt, body.author, sampling, body.user_id)
        return ArenaResponse(pair_id=pair_id, user_id=user_id, options=[
            ArenaOption(generation_id=s.generation_id, posts=[Post(text=p.text, ended=p.ended, filtered_copies=p.filtered_copies) for p in s.posts])
            for s in shown])

    @app.post("/v1/feedback", response_model=FeedbackResponse, responses=ERRORS, tags=["feedback"])
    def give_feedback(body: FeedbackRequest) -> FeedbackResponse:
        """Acknowledged only after the event is committed to the database."""
        event_id = service.feedback(body.generation_id, body.event, body.winner_id, body.user_id)
        return FeedbackResponse(id=event_id, generation_id=body.generation_id, event=body.event)

    @app.get("/v1/models", response_model=list[ModelInfo], tags=["models"])
    def models() -> list[ModelInfo]:
        from tweetforge.registry.versions import list_versions

        loaded = {m.version.ref for m in service.loaded()}
        return [ModelInfo(ref=v.ref, name=v.name, version=v.version, kind=v.kind, aliases=v.aliases, authors=v.params.get("authors", []),
                          loaded=v.ref in loaded, metrics=json_safe(v.metrics)) for v in list_versions(service.engine)]

    @app.get("/v1/experiments/{name}", responses=ERRORS, tags=["experiments"])
    def experiment(name: str) -> dict[str, Any]:
        """The experiment, per-variant rates with intervals, P(best) and the decision state."""
        from tweetforge.experiments.ab import ExperimentError, experiment_status

        try:
            return json_safe(experiment_status(service.engine, name).summary())
        except ExperimentError as exc:
            raise ServiceError(404, "unknown_experiment", str(exc)) from None

    @app.post("/v1/experiments", responses=ERRORS, tags=["admin"], dependencies=[Depends(admin)], status_code=201)
    def create_experiment(body: ExperimentCreate) -> dict[str, Any]:
        from tweetforge.experiments.ab import ExperimentError, parse_variant
        from tweetforge.experiments.ab import create_experiment as create

        try:
            created = create(service.engine, body.name, [parse_variant(v) for v in body.variants], body.metric, body.min_sample,
                             body.alpha, body.auto_promote)
        except ExperimentError as exc:
            raise ServiceError(422, "bad_experiment", str(exc)) from None
        return created.summary()

    @app.post("/v1/experiments/{name}/stop", responses=ERRORS, tags=["admin"], dependencies=[Depends(admin)])
    def stop_experiment(name: str) -> dict[str, Any]:
        from tweetforge.experiments.ab import ExperimentError
        from tweetforge.experiments.ab import stop_experiment as stop

        try:
            return stop(service.engine, name).summary()
        except ExperimentError as exc:
            raise ServiceError(404 if "no experiment" in str(exc) else 409, "bad_experiment", str(exc)) from None

    @app.post("/v1/experiments/{name}/promote", responses=ERRORS, tags=["admin"], dependencies=[Depends(admin)])
    def promote_experiment(name: str, variant: str | None = None) -> dict[str, Any]:
        from tweetforge.experiments.ab import ExperimentError, promote_variant

        try:
            target = promote_variant(service.engine, name, variant)
        except ExperimentError as exc:
            raise ServiceError(404 if "no experiment" in str(exc) else 409, "bad_experiment", str(exc)) from None
        return {"experiment": name, "variant": target.name, "champion": target.model_ref}

    @app.post("/v1/models/reload", responses=ERRORS, tags=["admin"], dependencies=[Depends(admin)])
    def reload() -> dict[str, Any]:
        """Load the current champions into a new pool and swap it in; in-flight requests finish on the old one."""
        service.load()
        return {"loaded": sorted(m.version.ref for m in service.loaded()), "failed": service.failures}

    from tweetforge.serving.graphql import graphql_router

    app.include_router(graphql_router(), prefix="/graphql", tags=["graphql"])

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    def readyz() -> JSONResponse:
        """Ready when every model asked for is loaded; otherwise 503 naming each failure and why."""
        body = {"ready": not service.failures and bool(service.loaded()),
                "loaded": sorted(m.version.ref for m in service.loaded()), "failed": service.failures}
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @app.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
    def prometheus() -> PlainTextResponse:
        from prometheus_client import CONTENT_TYPE_LATEST

        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    if ui:  # mounted last: at /, it takes every path the API does not answer
        from tweetforge.ui.app import mount_ui

        app = mount_ui(app, service, admin_token)
    return app
