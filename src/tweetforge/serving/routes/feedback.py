"""Feedback on served posts (likes, shares, arena votes) and the experiments it decides."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from tweetforge.experiments.ab import ExperimentError, experiment_status, json_safe
from tweetforge.serving.dependencies import ServiceDep
from tweetforge.serving.protocol import ERRORS, FeedbackRequest, FeedbackResponse
from tweetforge.serving.service import ServiceError

router = APIRouter(prefix="/v1", responses=ERRORS)


@router.post("/feedback", response_model=FeedbackResponse, tags=["feedback"])
def give_feedback(body: FeedbackRequest, service: ServiceDep) -> FeedbackResponse:
    """Acknowledged only after the event is committed to the database."""
    event_id = service.feedback(body.generation_id, body.event, winner_id=body.winner_id, user_id=body.user_id)
    return FeedbackResponse(id=event_id, generation_id=body.generation_id, event=body.event)


@router.get("/experiments/{name}", tags=["experiments"])
def experiment(name: str, service: ServiceDep) -> dict[str, Any]:
    """The experiment, per-variant rates with intervals, P(best) and the decision state."""
    try:
        return json_safe(experiment_status(service.engine, name).summary())
    except ExperimentError as exc:
        raise ServiceError(404, "unknown_experiment", str(exc)) from None
