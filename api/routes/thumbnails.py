"""GET /v1/thumbnails/{sample_id}: a sample's image as a small JPEG, made on first request and kept
in the workspace (api/thumbnails.py).

Read scope like every data route: the dashboard fetches thumbnails with its key and shows them as
blob URLs. The answer never changes for a sample id, so it carries an ETag (a matching
If-None-Match gets 304) and may be kept by the browser, privately, for a day.
"""

from __future__ import annotations

import os

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from api.auth import ReadScope
from api.deps import State
from api.errors import ERROR_RESPONSES, ApiError, ErrorBody
from api.routes.samples import SampleId
from api.thumbnails import MEDIA_TYPE, ThumbnailError, ensure_thumbnail, thumbnail_etag, thumbnail_rel

router = APIRouter(
    tags=["thumbnails"],
    dependencies=[ReadScope],
    responses={
        **ERROR_RESPONSES,
        404: {"model": ErrorBody, "description": "no such sample, or its image cannot be read"},
    },
)
CACHE_CONTROL = "private, max-age=86400"  # a day: thumbnails of an id never change; private: keyed data


@router.get(
    "/thumbnails/{sample_id}",
    response_class=Response,
    responses={
        200: {"content": {MEDIA_TYPE: {}}, "description": "The thumbnail (longest side 256 px)"},
        304: {"description": "The browser's copy is current"},
    },
)
async def get_thumbnail(sample_id: SampleId, request: Request, state: State) -> Response:
    etag = thumbnail_etag(sample_id)
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)

    def load() -> bytes:
        path = state.ws.path(thumbnail_rel(sample_id))
        if not os.path.isfile(path):  # a miss: find the sample's image (a kept one needs no lookup)
            rows = state.searcher.sample_rows([sample_id])
            if sample_id not in rows:
                raise ApiError(404, "not_found", f"no sample {sample_id}")
            try:
                path = ensure_thumbnail(state.ws, sample_id, rows[sample_id]["uri"])
            except ThumbnailError as e:
                raise ApiError(404, "no_image", str(e)) from None
        with open(path, "rb") as f:
            return f.read()

    # A cache miss decodes a full-size image (~50-200 ms): off the event loop.
    return Response(await run_in_threadpool(load), media_type=MEDIA_TYPE, headers=headers)
