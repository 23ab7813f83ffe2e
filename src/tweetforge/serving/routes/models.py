"""The registry as the server sees it, in OpenAI's list shape: every id a request may name."""

from __future__ import annotations

from fastapi import APIRouter

from tweetforge.experiments.ab import json_safe, list_experiments
from tweetforge.registry.versions import ModelVersion, list_versions
from tweetforge.serving.dependencies import ServiceDep
from tweetforge.serving.protocol import ERRORS, ModelInfo, ModelList, link

router = APIRouter(prefix="/v1", tags=["models"], responses=ERRORS)


USE = {"generate": link("/v1/generate", {"model": "$response.body#/data/0/id"}, "Posts from the first model listed"),
       "completions": link("/v1/completions", {"model": "$response.body#/data/0/id"}, "Completions from the first model listed")}


@router.get("/models", response_model=ModelList, responses={200: {"links": USE}})
def models(service: ServiceDep) -> ModelList:
    """Each version (NAME:VERSION), each persona (NAME: its champion, else its latest version) and each
    running experiment (its first variant shown)."""
    loaded = {m.version.ref for m in service.loaded()}
    versions = list_versions(service.engine)

    def entry(id_: str, v: ModelVersion, kind: str | None = None) -> ModelInfo:
        return ModelInfo(id=id_, created=int(v.created_at.timestamp()), ref=v.ref, name=v.name, version=v.version, kind=kind or v.kind,
                         aliases=v.aliases, authors=v.params.get("authors", []), loaded=v.ref in loaded, adapter=bool(v.params.get("adapter")),
                         metrics=json_safe(v.metrics))

    personas = {v.name: v for v in versions} | {v.name: v for v in versions if "champion" in v.aliases}  # versions ascend: the latest
    by_ref = {v.ref: v for v in versions}
    experiments = [(e.name, by_ref[e.variants[0].model_ref]) for e in list_experiments(service.engine)
                   if e.status == "running" and e.variants and e.variants[0].model_ref in by_ref]
    return ModelList(data=[*(entry(v.ref, v) for v in versions), *(entry(name, v) for name, v in sorted(personas.items())),
                           *(entry(name, v, "experiment") for name, v in experiments)])
