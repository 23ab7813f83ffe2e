"""Feedback on served posts: likes, shares and arena votes, the outcomes experiments decide on."""

from __future__ import annotations

from fastapi import APIRouter

from tweetforge.serving.dependencies import ServiceDep
from tweetforge.serving.protocol import ERRORS, FeedbackRequest, FeedbackResponse

router = APIRouter(prefix="/v1", tags=["feedback"], responses=ERRORS)


@router.post("/feedback", response_model=FeedbackResponse)
def give_feedback(body: FeedbackRequest, service: ServiceDep) -> FeedbackResponse:
    """Acknowledged only after the event is committed to the database."""
    event_id = service.feedback(body.generation_id, body.event, winner_id=body.winner_id, user_id=body.user_id)
    return FeedbackResponse(id=event_id, generation_id=body.generation_id, event=body.event)
