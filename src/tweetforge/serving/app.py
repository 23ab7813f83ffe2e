"""The HTTP API: a router per area under /v1 (OpenAPI at /docs), GraphQL at /graphql, errors as
structured JSON, admin operations behind a bearer token, a per-client rate limit on generation, bounded
request bodies (limits.py) and Prometheus metrics. Every route is a thin call into the service layer
(service.py); the web UI mounts itself on this app (tweetforge.ui.app.mount_ui)."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException

from tweetforge.config import Settings
from tweetforge.db.engine import StoreBusy
from tweetforge.serving.graphql import graphql_router
from tweetforge.serving.limits import Limits, RequestLimits
from tweetforge.serving.metrics import MeasureRequests, Metrics
from tweetforge.serving.protocol import ErrorBody, ErrorResponse
from tweetforge.serving.rate_limit import RateLimiter, trusted_networks
from tweetforge.serving.routes import admin, completions, feedback, generation, models, operations
from tweetforge.serving.service import Service, ServiceError, store_refusal


def error_response(status: int, code: str, message: str, fields: list[dict[str, str]] | None = None,
                   retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    body = ErrorResponse(error=ErrorBody(code=code, message=message, fields=fields))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


async def service_error(_request: Request, exc: ServiceError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, retry_after=exc.retry_after)


async def store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    return await service_error(request, store_refusal(exc))


async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    fields = [{"field": ".".join(str(p) for p in e["loc"] if p != "body"), "message": e["msg"]} for e in exc.errors()]
    summary = "; ".join(f"{f['field'] or 'body'}: {f['message']}" for f in fields)
    return error_response(422, "validation_error", summary, fields)


HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 408: "request_timeout", 413: "too_large"}


async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's and FastAPI's own refusals (no such path, wrong method, a body over the limit, a body that
    is not JSON) in the same shape as every other error. A refused body may still be arriving: close."""
    response = error_response(exc.status_code, HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail))
    response.headers.update(exc.headers or {})
    if exc.status_code in (408, 413):
        response.headers["Connection"] = "close"
    return response


async def server_error(_request: Request, _exc: Exception) -> JSONResponse:
    """A bug: the answer says so in the API's shape; uvicorn logs the traceback."""
    return error_response(500, "internal_error", "the server failed on this request; its log has the details")


def create_app(service: Service, *, admin_token: str | None = None, cors_origins: Sequence[str] | None = None,
               rate_limit_per_minute: int = 120, trusted_proxies: Sequence[str] = (), limits: Limits | None = None) -> FastAPI:
    """trusted_proxies: the addresses or networks whose X-Forwarded-For names the client (the rate limit's key)."""
    limits = limits or Limits.of(Settings())
    app = FastAPI(title="tweetforge", version="1", description="Posts written by models trained on someone's posts. "
                  "Every generated post is marked `generated: true`.")
    metrics = Metrics(lambda: {m.version.ref: m.batcher.depth() for m in service.loaded()})
    service.batch_observers.append(metrics.observe_batch)
    app.state.service, app.state.metrics, app.state.admin_token, app.state.limits = service, metrics, admin_token, limits
    app.state.rate_limiter, app.state.trusted_proxies = RateLimiter(rate_limit_per_minute), trusted_networks(trusted_proxies)
    # the last added runs first: metrics see every answer, CORS headers reach the refusals too
    app.add_middleware(RequestLimits, limits=limits)
    if cors_origins:  # closed unless configured: without it a browser page from another origin cannot read any answer
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"], allow_headers=["*"])
    app.add_middleware(MeasureRequests, metrics=metrics)
    app.add_exception_handler(ServiceError, service_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, server_error)
    for lost in (OperationalError, InterfaceError, StoreBusy):  # pool_pre_ping replaces dead connections once the server is back
        app.add_exception_handler(lost, store_unavailable)
    for area in (generation, completions, feedback, models, admin, operations):
        app.include_router(area.router)
    app.include_router(graphql_router(limits), prefix="/graphql", tags=["graphql"])
    return app
