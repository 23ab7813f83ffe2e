"""The registry as the server sees it."""

from __future__ import annotations

from fastapi import APIRouter

from tweetforge.experiments.ab import json_safe
from tweetforge.registry.versions import list_versions
from tweetforge.serving.dependencies import ServiceDep
from tweetforge.serving.protocol import ERRORS, ModelInfo

router = APIRouter(prefix="/v1", tags=["models"], responses=ERRORS)


@router.get("/models", response_model=list[ModelInfo])
def models(service: ServiceDep) -> list[ModelInfo]:
    loaded = {m.version.ref for m in service.loaded()}
    return [ModelInfo(ref=v.ref, name=v.name, version=v.version, kind=v.kind, aliases=v.aliases, authors=v.params.get("authors", []),
                      loaded=v.ref in loaded, metrics=json_safe(v.metrics)) for v in list_versions(service.engine)]
