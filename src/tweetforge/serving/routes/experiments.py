"""A/B experiments: anyone reads an experiment's state; creating, stopping and promoting need the admin token."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from tweetforge.experiments.ab import (
    ExperimentError,
    create_experiment,
    experiment_status,
    json_safe,
    parse_variant,
    promote_variant,
    stop_experiment,
)
from tweetforge.serving.dependencies import ADMIN, ServiceDep
from tweetforge.serving.protocol import ERRORS, ExperimentCreate
from tweetforge.serving.service import ServiceError

router = APIRouter(prefix="/v1/experiments", responses=ERRORS)


def refused(exc: ExperimentError) -> ServiceError:
    """404 for an experiment that does not exist, 409 for one in the wrong state."""
    return ServiceError(404 if "no experiment" in str(exc) else 409, "bad_experiment", str(exc))


@router.get("/{name}", tags=["experiments"])
def experiment(name: str, service: ServiceDep) -> dict[str, Any]:
    """The experiment, per-variant rates with intervals, P(best) and the decision state."""
    try:
        return json_safe(experiment_status(service.engine, name).summary())
    except ExperimentError as exc:
        raise ServiceError(404, "unknown_experiment", str(exc)) from None


@router.post("", tags=["admin"], dependencies=ADMIN, status_code=201)
def create(body: ExperimentCreate, service: ServiceDep) -> dict[str, Any]:
    try:
        created = create_experiment(service.engine, body.name, [parse_variant(v) for v in body.variants], metric=body.metric,
                                    min_sample=body.min_sample, alpha=body.alpha, auto_promote=body.auto_promote)
    except ExperimentError as exc:
        raise ServiceError(422, "bad_experiment", str(exc)) from None
    return created.summary()


@router.post("/{name}/stop", tags=["admin"], dependencies=ADMIN)
def stop(name: str, service: ServiceDep) -> dict[str, Any]:
    try:
        return stop_experiment(service.engine, name).summary()
    except ExperimentError as exc:
        raise refused(exc) from None


@router.post("/{name}/promote", tags=["admin"], dependencies=ADMIN)
def promote(name: str, service: ServiceDep, variant: str | None = None) -> dict[str, Any]:
    try:
        target = promote_variant(service.engine, name, variant)
    except ExperimentError as exc:
        raise refused(exc) from None
    return {"experiment": name, "variant": target.name, "champion": target.model_ref}
