"""The registry as the server sees it, and reloading the pool of loaded models."""

from __future__ import annotations

from fastapi import APIRouter

from tweetforge.experiments.ab import json_safe
from tweetforge.registry.versions import list_versions
from tweetforge.serving.dependencies import ADMIN, ServiceDep
from tweetforge.serving.protocol import ERRORS, ModelInfo, Pool

router = APIRouter(prefix="/v1/models", responses=ERRORS)


@router.get("", response_model=list[ModelInfo], tags=["models"])
def models(service: ServiceDep) -> list[ModelInfo]:
    loaded = {m.version.ref for m in service.loaded()}
    return [ModelInfo(ref=v.ref, name=v.name, version=v.version, kind=v.kind, aliases=v.aliases, authors=v.params.get("authors", []),
                      loaded=v.ref in loaded, metrics=json_safe(v.metrics)) for v in list_versions(service.engine)]


@router.post("/reload", response_model=Pool, tags=["admin"], dependencies=ADMIN)
def reload(service: ServiceDep) -> Pool:
    """Load the current champions into a new pool and swap it in; in-flight requests finish on the old one."""
    service.load()
    return Pool(loaded=sorted(m.version.ref for m in service.loaded()), failed=service.failures)
