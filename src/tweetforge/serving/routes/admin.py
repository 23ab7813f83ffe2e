"""What changes the running system: experiments created, stopped or promoted, and the model pool
reloaded. Every route here needs the admin bearer token."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from tweetforge.experiments.ab import ExperimentError, create_experiment, parse_variant, promote_variant, stop_experiment
from tweetforge.serving.dependencies import AdminDep, ServiceDep
from tweetforge.serving.protocol import ERRORS, ExperimentCreate, Pool
from tweetforge.serving.service import ServiceError

router = APIRouter(prefix="/v1", tags=["admin"], dependencies=[AdminDep], responses=ERRORS)


def refused(exc: ExperimentError) -> ServiceError:
    """404 for an experiment that does not exist, 409 for one in the wrong state."""
    return ServiceError(404 if "no experiment" in str(exc) else 409, "bad_experiment", str(exc))


@router.post("/experiments", status_code=201)
def create(body: ExperimentCreate, service: ServiceDep) -> dict[str, Any]:
    try:
        created = create_experiment(service.engine, body.name, [parse_variant(v) for v in body.variants], metric=body.metric,
                                    min_sample=body.min_sample, alpha=body.alpha, auto_promote=body.auto_promote)
    except ExperimentError as exc:
        raise ServiceError(422, "bad_experiment", str(exc)) from None
    return created.summary()


@router.post("/experiments/{name}/stop")
def stop(name: str, service: ServiceDep) -> dict[str, Any]:
    try:
        return stop_experiment(service.engine, name).summary()
    except ExperimentError as exc:
        raise refused(exc) from None


@router.post("/experiments/{name}/promote")
def promote(name: str, service: ServiceDep, variant: str | None = None) -> dict[str, Any]:
    try:
        target = promote_variant(service.engine, name, variant)
    except ExperimentError as exc:
        raise refused(exc) from None
    return {"experiment": name, "variant": target.name, "champion": target.model_ref}


@router.post("/models/reload", response_model=Pool)
def reload(service: ServiceDep) -> Pool:
    """Load the current champions into a new pool and swap it in; in-flight requests finish on the old one."""
    service.load()
    return Pool(loaded=sorted(m.version.ref for m in service.loaded()), failed=service.failures)
