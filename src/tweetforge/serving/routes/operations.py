"""For the machines around the server: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from tweetforge.serving.dependencies import MetricsDep, ServiceDep
from tweetforge.serving.protocol import Readiness

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(service: ServiceDep) -> JSONResponse:
    """Ready when every model asked for is loaded; otherwise 503 naming each failure and why."""
    loaded = sorted(m.version.ref for m in service.loaded())
    body = Readiness(ready=not service.failures and bool(loaded), loaded=loaded, failed=service.failures)
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get("/metrics", response_class=PlainTextResponse)
def prometheus(metrics: MetricsDep) -> PlainTextResponse:
    return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE_LATEST)
