"""POST /v1/feedback: a trainer's concept-loss report (write scope), stored as
``engine.s3dit.concept_loss.send_feedback`` stores it (schema.CONCEPT_LOSS: int64 concept ids, null
for draws without a concept), so the stage's next manifest is reweighted (and gets a new id: the
reports are part of its identity)."""

from __future__ import annotations

import os

import pyarrow as pa
from fastapi import APIRouter

from api.auth import WriteScope
from api.deps import State
from api.errors import ERROR_RESPONSES
from api.schemas import FeedbackRequest, FeedbackResult
from engine import schema
from engine.curation.feedback import FeedbackConfig, stage_feedback
from engine.curation.manifest_identity import feedback_config
from engine.curation.recipe import load_recipe, shipped_recipes
from engine.s3dit.concept_loss import send_feedback

router = APIRouter(tags=["feedback"], responses=ERROR_RESPONSES)


@router.post("/feedback", response_model=FeedbackResult, status_code=201, dependencies=[WriteScope])
def post_feedback(body: FeedbackRequest, state: State) -> FeedbackResult:
    rows = [
        {"stage": body.stage, "step": body.step, "manifest": body.manifest} | loss.model_dump()
        for loss in body.losses
    ]
    # One report per (stage, step): sending a step again replaces its report, as the trainer's own
    # send_feedback does when a run resumes from a checkpoint and reaches that step again.
    path = os.path.relpath(
        send_feedback(state.ws, pa.Table.from_pylist(rows, schema=schema.CONCEPT_LOSS)), state.ws.root
    )
    # The multipliers the stage's next manifest will use (its shipped recipe's feedback step, if any).
    config = feedback_config(load_recipe(body.stage)) if body.stage in shipped_recipes() else FeedbackConfig()
    summary = stage_feedback(state.ws, body.stage, config).summary
    return FeedbackResult(path=path, rows=len(rows), multipliers=summary)
