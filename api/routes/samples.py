"""/v1/samples: a filtered page of usable samples with the total count, one sample in full, and
the near-duplicate communities (the dashboard's explorer and overview).

The queries are ``engine.catalog``'s (``sample_page``, ``sample_detail``, ``communities``); a
route turns the request into their arguments and their answer into a schema.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.auth import ReadScope
from api.deps import State
from api.errors import ERROR_RESPONSES, ApiError, ErrorBody
from api.sandbox import json_safe
from api.schemas import (
    SAMPLE_ID_PATTERN,
    Communities,
    SampleCard,
    SampleDetail,
    SampleFilter,
    SamplePage,
)
from engine import schema
from engine.catalog import SampleQuery, communities, sample_detail, sample_page

router = APIRouter(
    tags=["samples"],
    dependencies=[ReadScope],
    responses={**ERROR_RESPONSES, 404: {"model": ErrorBody, "description": "no such sample or concept"}},
)
SampleId = Annotated[str, Path(pattern=SAMPLE_ID_PATTERN, description="A sample id (32 hex digits)")]


def sample_query(f: SampleFilter) -> SampleQuery:
    """The engine's query for a request's filter (only the bounds it gives)."""
    ranges = {c: (getattr(f, f"{c}_min"), getattr(f, f"{c}_max")) for c in schema.EXPLORER_SIGNALS}
    return SampleQuery(
        ranges={c: bounds for c, bounds in ranges.items() if bounds != (None, None)},
        concept=f.concept,
        has_text=f.has_text,
        community=f.community,
        near_duplicate=f.near_duplicate,
        caption=f.caption,
        sort=f.sort,
        offset=f.offset,
        limit=f.limit,
    )


@router.get("/samples", response_model=SamplePage)
def list_samples(state: State, f: Annotated[SampleFilter, Query()]) -> SamplePage:
    total, rows = sample_page(state.ws, sample_query(f))  # an unknown concept: 404 (api/errors.py)
    cards = [SampleCard(**json_safe(row)) for row in rows]
    return SamplePage(total=total, offset=f.offset, limit=f.limit, samples=cards)


@router.get("/samples/{sample_id}", response_model=SampleDetail)
def get_sample(sample_id: SampleId, state: State) -> SampleDetail:
    detail = sample_detail(state.ws, sample_id)
    if detail is None:
        raise ApiError(404, "not_found", f"no sample {sample_id}")
    return SampleDetail(**json_safe(detail))


@router.get("/communities", response_model=Communities)
def list_communities(
    state: State, limit: Annotated[int, Query(ge=0, le=1000, description="How many of the largest")] = 20
) -> Communities:
    def compute() -> Communities:
        return Communities(**json_safe(communities(state.ws, limit)))

    return state.answers.get(("communities", limit), compute)
