"""/v1/manifests: ask for a stage's manifest (write scope), follow its build, read its sidecar, and
download its Parquet (HTTP Range requests, so a trainer can read row groups or resume)."""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import FileResponse

from api.auth import ReadScope, WriteScope
from api.deps import State
from api.errors import ERROR_RESPONSES, ApiError, ErrorBody
from api.histogram import weight_histogram
from api.manifests import Build
from api.ranges import MalformedRange, UnsatisfiableRange, parse_range
from api.schemas import (
    MANIFEST_ID_PATTERN,
    STAGE_PATTERN,
    Histogram,
    ManifestRequest,
    ManifestStatus,
    ManifestSummary,
)
from engine.curation.manifest import ManifestError
from engine.curation.recipe import load_recipe, shipped_recipes

router = APIRouter(
    tags=["manifests"],
    responses={**ERROR_RESPONSES, 404: {"model": ErrorBody, "description": "no such manifest"}},
)
ManifestId = Annotated[str, Path(pattern=MANIFEST_ID_PATTERN, description="A manifest id (16 hex digits)")]
PARQUET = "application/vnd.apache.parquet"


def manifest_status(build: Build, sidecar: dict | None = None) -> ManifestStatus:
    return ManifestStatus(
        id=build.id,
        stage=build.stage,
        status=build.status,
        error=build.error,
        created=build.created,
        started=build.started,
        finished=build.finished,
        sidecar=sidecar,
    )


def found(state: State, manifest_id: str) -> Build:
    build = state.manifests.get(manifest_id)
    if build is None:
        raise ApiError(404, "not_found", f"no manifest {manifest_id}: request one with POST /v1/manifests")
    return build


def not_ready(build: Build) -> ApiError:
    return ApiError(
        409,
        "not_ready",
        f"manifest {build.id} is {build.status}: wait until GET /v1/manifests/{build.id} says ready",
    )


@router.post(
    "/manifests",
    response_model=ManifestStatus,
    status_code=202,
    dependencies=[WriteScope],
    responses={503: {"model": ErrorBody, "description": "the build cannot be recorded in the workspace"}},
)
def post_manifest(body: ManifestRequest, state: State) -> ManifestStatus:
    if body.stage not in shipped_recipes():
        raise ApiError(
            422, "invalid_recipe", f"no recipe {body.stage!r}: use one of {', '.join(shipped_recipes())}"
        )
    if body.size is not None and body.size > state.settings.manifest_max_draws:
        raise ApiError(422, "invalid_request", f"size must be at most {state.settings.manifest_max_draws}")
    # A RecipeError names the key; the other types catch an override value of a JSON type the
    # recipe checker did not expect. Bad input either way: a 422, never a 500.
    try:
        recipe = load_recipe(body.stage, body.overrides)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ApiError(422, "invalid_recipe", str(e) or type(e).__name__) from None
    try:
        build = state.manifests.request(recipe, body.seed, body.size)
    except ManifestError as e:
        raise ApiError(422, "invalid_request", str(e)) from None
    except OSError as e:  # the build record cannot be written: nothing was queued
        raise ApiError(
            503,
            "workspace_unwritable",
            f"cannot record the build in the workspace ({e}): check its free space and permissions",
        ) from None
    return manifest_status(build)


@router.get("/manifests", response_model=list[ManifestSummary], dependencies=[ReadScope])
def list_manifests(
    state: State,
    stage: Annotated[str | None, Query(pattern=STAGE_PATTERN, description="Only this stage's")] = None,
) -> list[ManifestSummary]:
    return [ManifestSummary(**row) for row in state.manifests.listing(stage)]


@router.get("/manifests/{manifest_id}", response_model=ManifestStatus, dependencies=[ReadScope])
def get_manifest(manifest_id: ManifestId, state: State) -> ManifestStatus:
    build = found(state, manifest_id)
    sidecar = state.manifests.sidecar(build) if build.status == "ready" else None
    return manifest_status(build, sidecar)


@router.get(
    "/manifests/{manifest_id}/weights",
    response_model=Histogram,
    dependencies=[ReadScope],
    responses={409: {"model": ErrorBody, "description": "the manifest is not built yet"}},
)
def get_manifest_weights(manifest_id: ManifestId, state: State) -> Histogram:
    """The distribution of the manifest's row weights (20 equal-width bins), for the dashboard."""
    build = found(state, manifest_id)
    if build.status != "ready":
        raise not_ready(build)
    try:
        return Histogram(**weight_histogram(state.manifests.data_path(build)))
    except FileNotFoundError:  # removed since the lookup
        raise ApiError(404, "not_found", f"manifest {manifest_id} was removed: request it again") from None


@router.get(
    "/manifests/{manifest_id}/data",
    dependencies=[ReadScope],
    response_class=FileResponse,
    responses={
        200: {"content": {PARQUET: {}}, "description": "The manifest's Parquet file"},
        206: {"content": {PARQUET: {}}, "description": "The requested byte range(s)"},
        400: {"model": ErrorBody, "description": "a malformed Range header"},
        409: {"model": ErrorBody, "description": "the manifest is not built yet"},
        416: {"model": ErrorBody, "description": "a range outside the file"},
    },
)
def get_manifest_data(manifest_id: ManifestId, request: Request, state: State) -> FileResponse:
    build = found(state, manifest_id)
    if build.status != "ready":
        raise not_ready(build)
    path = state.manifests.data_path(build)
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:  # removed since the lookup
        raise ApiError(404, "not_found", f"manifest {manifest_id} was removed: request it again") from None
    http_range = request.headers.get("range")
    if http_range is not None:
        # FileResponse serves ranges (206, multipart for several) but answers bad ones in plain
        # text: check them first (api/ranges.py, the stricter parser), so every error is our JSON.
        try:
            parse_range(http_range, size)
        except MalformedRange as e:
            raise ApiError(400, "bad_range", str(e)) from None
        except UnsatisfiableRange as e:
            raise ApiError(
                416, "range_not_satisfiable", str(e), {"Content-Range": f"bytes */{size}"}
            ) from None
    return FileResponse(path, media_type=PARQUET, filename=f"{build.stage}-{build.id}.parquet")
