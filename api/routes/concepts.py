"""GET /v1/concepts/{concept}: a concept (id or synset name) with its neighbours and their counts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.auth import ReadScope
from api.deps import State
from api.errors import ERROR_RESPONSES, ApiError, ErrorBody
from api.sandbox import json_safe
from api.schemas import ConceptNeighbourhood
from engine.graph import concept_neighbourhood

router = APIRouter(
    tags=["concepts"],
    dependencies=[ReadScope],
    responses={**ERROR_RESPONSES, 404: {"model": ErrorBody, "description": "no such concept"}},
)

MAX_ID = 2**63 - 1  # concept ids are BIGINT


@router.get("/concepts/{concept}", response_model=ConceptNeighbourhood)
def get_concept(
    state: State,
    concept: Annotated[
        str,
        Path(
            min_length=1,
            max_length=200,
            pattern=r"^[A-Za-z0-9_.'\-]+$",
            description="A concept id (e.g. 1440764) or a synset name (e.g. dog.n.01)",
        ),
    ],
) -> ConceptNeighbourhood:
    key: str | int = concept
    if concept.isdigit():
        if int(concept) > MAX_ID:
            raise ApiError(404, "not_found", f"no concept {concept}")
        key = int(concept)

    def compute() -> ConceptNeighbourhood | str:
        try:
            return ConceptNeighbourhood(**json_safe(concept_neighbourhood(state.ws, key)))
        except ValueError as e:  # an unknown concept: remembered too (a miss costs as much as a hit)
            return str(e)

    result = state.answers.get(("concept", key), compute)
    if isinstance(result, str):
        raise ApiError(404, "not_found", result)
    return result
