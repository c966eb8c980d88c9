"""GET /v1/search?text= (text->image) and POST /v1/search with an image body (image->image).

``target`` picks the index: ``image`` (default) or ``text`` (an image query against the caption
vectors is image->text). The image is the raw request body (Content-Type image/* or
application/octet-stream), size-limited by the body limit and decoded with the ingest checks
(a pixel cap against decompression bombs).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from api.auth import ReadScope
from api.deps import State
from api.errors import ERROR_RESPONSES, ApiError, ErrorBody
from api.schemas import SearchResult
from api.searcher import SearchUnavailable
from engine.profiling.ingest import IngestConfig, Reject, decode_image
from engine.vectors.embedder import EmbedderError

router = APIRouter(
    tags=["search"],
    dependencies=[ReadScope],
    responses={**ERROR_RESPONSES, 409: {"model": ErrorBody, "description": "no usable index"}},
)

K_LIMIT = 1000  # the schema's bound; the service's own (ZCURATE_MAX_K) is checked per request
Target = Annotated[Literal["image", "text"], Query(description="Index to search: image or text")]
K = Annotated[int, Query(ge=1, le=K_LIMIT, description="How many results")]
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif", "application/octet-stream")


def run_search(state: State, query_of, target: str, k: int) -> SearchResult:
    if k > state.settings.max_k:
        raise ApiError(422, "invalid_request", f"k must be at most {state.settings.max_k}")
    try:
        hits = state.searcher.search(query_of(), target, k)
    except SearchUnavailable as e:
        raise ApiError(409, "index_unavailable", str(e)) from None
    except EmbedderError as e:
        raise ApiError(409, "embedder_unavailable", str(e)) from None
    return SearchResult(target=target, model_id=state.searcher.embedder().model_id, hits=hits)


@router.get("/search", response_model=SearchResult)
def search_text(
    state: State,
    text: Annotated[str, Query(min_length=1, max_length=10_000, description="Text query (text->image)")],
    k: K = 10,
    target: Target = "image",
) -> SearchResult:
    if not text.strip():
        raise ApiError(422, "invalid_request", "text is empty")
    if len(text) > state.settings.max_text_chars:
        raise ApiError(422, "invalid_request", f"text longer than {state.settings.max_text_chars} characters")
    return run_search(state, lambda: state.searcher.query_text(text), target, k)


@router.post(
    "/search",
    response_model=SearchResult,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The query image's bytes (PNG, JPEG, WebP, GIF, ...)",
            "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES},
        }
    },
)
async def search_image(request: Request, state: State, k: K = 10, target: Target = "image") -> SearchResult:
    data = await request.body()  # BodyLimit caps it at max_upload_bytes
    if not data:
        raise ApiError(422, "invalid_request", "send the query image as the request body")
    limits = state.settings
    config = IngestConfig(max_pixels=limits.max_image_pixels, max_file_bytes=limits.max_upload_bytes)

    def decode():
        try:
            image, _, _ = decode_image(data, "query", config)
        except Reject as e:
            raise ApiError(422, "invalid_image", f"{e.reason}: {e.detail or ''}".rstrip(": ")) from None
        except Exception as e:  # a decoder failure decode_image does not classify: still bad input
            raise ApiError(422, "invalid_image", f"cannot decode: {type(e).__name__}") from None
        return state.searcher.query_image(image)

    # decoding and the forward pass are CPU work: off the event loop
    vector = await run_in_threadpool(decode)
    return await run_in_threadpool(run_search, state, lambda: vector, target, k)
