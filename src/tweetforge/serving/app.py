"""The HTTP API: a router per area under /v1 (OpenAPI at /docs), GraphQL at /graphql, errors as
structured JSON, admin operations behind a bearer token, a per-client rate limit on generation and
Prometheus metrics. Every route is a thin call into the service layer (service.py); the web UI mounts
itself on this app (tweetforge.ui.app.mount_ui)."""

from __future__ import annotations

import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError

from tweetforge.serving.graphql import graphql_router
from tweetforge.serving.metrics import Metrics
from tweetforge.serving.protocol import ErrorBody, ErrorResponse
from tweetforge.serving.rate_limit import RateLimiter
from tweetforge.serving.routes import admin, completions, feedback, generation, models, operations
from tweetforge.serving.service import Service, ServiceError

MAX_BODY_BYTES = 64 * 1024


def error_response(status: int, code: str, message: str, fields: list[dict[str, str]] | None = None,
                   retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    body = ErrorResponse(error=ErrorBody(code=code, message=message, fields=fields))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


async def service_error(_request: Request, exc: ServiceError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, retry_after=exc.retry_after)


async def store_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    """The database is down, unreachable or (SQLite) busy past its timeout: the request can be retried, so
    503 rather than 500; the driver's message stays out of the answer (it names hosts and users)."""
    busy = "locked" in str(exc) or "busy" in str(exc)
    message = ("the store is busy with another writer; retry shortly" if busy
               else "the store (database) cannot be reached; this replica recovers by itself when it is back, retry shortly")
    return error_response(503, "store_busy" if busy else "store_unavailable", message, retry_after=2 if busy else 5)


async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    fields = [{"field": ".".join(str(p) for p in e["loc"] if p != "body"), "message": e["msg"]} for e in exc.errors()]
    summary = "; ".join(f"{f['field'] or 'body'}: {f['message']}" for f in fields)
    return error_response(422, "validation_error", summary, fields)


async def limit_and_measure(request: Request, call_next):  # type: ignore[no-untyped-def]
    """Refuses an oversized body before reading it; counts every request and its latency per route."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
        return error_response(413, "too_large", f"request body of {length} bytes; the limit is {MAX_BODY_BYTES}")
    metrics: Metrics = request.app.state.metrics  # read first: a mounted app (the web UI) takes request.app over
    started = time.perf_counter()
    response = await call_next(request)
    path = getattr(request.scope.get("route"), "path", "unmatched")
    metrics.observe_request(path, response.status_code, time.perf_counter() - started)
    return response


def create_app(service: Service, *, admin_token: str | None = None, cors_origins: list[str] | None = None,
               rate_limit_per_minute: int = 120) -> FastAPI:
    app = FastAPI(title="tweetforge", version="1", description="Posts written by models trained on someone's posts. "
                  "Every generated post is marked `generated: true`.")
    metrics = Metrics(lambda: {m.version.ref: m.batcher.depth() for m in service.loaded()})
    service.batch_observers.append(metrics.observe_batch)
    app.state.service, app.state.metrics, app.state.admin_token = service, metrics, admin_token
    app.state.rate_limiter = RateLimiter(rate_limit_per_minute)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["GET", "POST"], allow_headers=["*"])
    app.middleware("http")(limit_and_measure)
    app.add_exception_handler(ServiceError, service_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    for lost in (OperationalError, InterfaceError):  # pool_pre_ping replaces dead connections once the server is back
        app.add_exception_handler(lost, store_unavailable)
    for area in (generation, completions, feedback, models, admin, operations):
        app.include_router(area.router)
    app.include_router(graphql_router(), prefix="/graphql", tags=["graphql"])
    return app
