"""POST /v1/feedback: a trainer's concept-loss report (write scope), stored as
``engine.s3dit.concept_loss.send_feedback`` stores it (schema.CONCEPT_LOSS: int64 concept ids, null
for draws without a concept), so the stage's next manifest is reweighted (and gets a new id: the
reports are part of its identity).

When the report names the manifest its draws came from (its id, ``.../v1/manifests/ID/data`` or
``manifests/<stage>/ID.parquet``) and the service holds it, the service requests that manifest
again (its sidecar's recipe, seed and size) as the local trainer's refresh does, and answers with
the new build (``refreshed``, and ``Location: /v1/manifests/NEW``): the trainer follows it.
"""

from __future__ import annotations

import logging
import os
import re

import pyarrow as pa
from fastapi import APIRouter, Response

from api.auth import WriteScope
from api.deps import ServiceState, State
from api.errors import ERROR_RESPONSES, ApiError, ErrorBody
from api.routes.manifests import manifest_status
from api.schemas import FeedbackRequest, FeedbackResult, ManifestStatus
from engine import schema
from engine.curation.feedback import FeedbackConfig, stage_feedback
from engine.curation.manifest import ManifestError
from engine.curation.manifest_identity import feedback_config
from engine.curation.recipe import load_recipe, shipped_recipes
from engine.s3dit.concept_loss import send_feedback

log = logging.getLogger("zcurate.api")
router = APIRouter(tags=["feedback"], responses=ERROR_RESPONSES)
# A manifest id alone, or ending a data URL (.../ID/data), a status URL (.../ID) or a file (ID.parquet).
MANIFEST_REF = re.compile(r"(?:^|/)([0-9a-f]{16})(?:/data|\.parquet)?/?$")


def reported_manifest(manifest: str) -> str | None:
    """The manifest id a report's ``manifest`` names, if it names one."""
    match = MANIFEST_REF.search(re.split(r"[?#]", manifest.strip(), maxsplit=1)[0])  # a URL's path
    return match.group(1) if match else None


@router.post(
    "/feedback",
    response_model=FeedbackResult,
    status_code=201,
    dependencies=[WriteScope],
    responses={503: {"model": ErrorBody, "description": "the report cannot be written to the workspace"}},
)
def post_feedback(body: FeedbackRequest, state: State, response: Response) -> FeedbackResult:
    rows = [
        {"stage": body.stage, "step": body.step, "manifest": body.manifest} | loss.model_dump()
        for loss in body.losses
    ]
    # One report per (stage, step): sending a step again replaces its report, as the trainer's own
    # send_feedback does when a run resumes from a checkpoint and reaches that step again.
    try:
        written = send_feedback(state.ws, pa.Table.from_pylist(rows, schema=schema.CONCEPT_LOSS))
    except OSError as e:
        raise ApiError(
            503, "workspace_unwritable", f"cannot write the report ({e}): check the workspace's free space"
        ) from None
    # The multipliers the stage's next manifest will use (its shipped recipe's feedback step, if any).
    config = feedback_config(load_recipe(body.stage)) if body.stage in shipped_recipes() else FeedbackConfig()
    summary = stage_feedback(state.ws, body.stage, config).summary
    refreshed = refresh(state, body.manifest)
    if refreshed is not None:
        response.headers["Location"] = f"/v1/manifests/{refreshed.id}"
    return FeedbackResult(
        path=os.path.relpath(written, state.ws.root), rows=len(rows), multipliers=summary, refreshed=refreshed
    )


def refresh(state: ServiceState, manifest: str) -> ManifestStatus | None:
    """The reported manifest requested again over the new report (None: it names none the service has)."""
    manifest_id = reported_manifest(manifest)
    if manifest_id is None:
        return None
    try:
        build = state.manifests.refresh(manifest_id)
    except (ManifestError, ValueError, OSError) as e:  # the report is stored; only the follow-up is off
        log.warning("no refreshed manifest for %s: %s", manifest_id, e)
        return None
    return None if build is None else manifest_status(build)
