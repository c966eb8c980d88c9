"""GET /v1/concepts/{concept}: a concept (id or synset name) with its neighbours and their counts;
GET /v1/concepts?q=: concepts by name; GET /v1/concepts/gaps: the most over- and under-represented."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.auth import ReadScope
from api.deps import State
from api.errors import ERROR_RESPONSES, ApiError, ErrorBody
from api.sandbox import json_safe
from api.schemas import ConceptGap, ConceptGaps, ConceptMatch, ConceptNeighbourhood
from engine.graph import concept_queries
from engine.graph.concept_queries import ConceptNotFound, concept_neighbourhood, representation_gaps

router = APIRouter(
    tags=["concepts"],
    dependencies=[ReadScope],
    responses={**ERROR_RESPONSES, 404: {"model": ErrorBody, "description": "no such concept"}},
)


@router.get("/concepts", response_model=list[ConceptMatch])
def search_concepts(
    state: State,
    q: Annotated[str, Query(min_length=1, max_length=100, description="Part of a synset name or lemma")],
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> list[ConceptMatch]:
    """Concepts whose synset or a lemma contains ``q`` (any case, spaces as underscores): exact
    names first, then the most samples (rolled up)."""
    try:
        rows = concept_queries.search_concepts(state.ws, q, limit)
    except ValueError as e:  # only spaces
        raise ApiError(422, "invalid_request", f"q: {e}") from None
    return [ConceptMatch(**row) for row in rows.to_pylist()]


@router.get("/concepts/gaps", response_model=ConceptGaps)
def concept_gaps(
    state: State,
    depth: Annotated[int, Query(ge=0, le=30, description="The graph level compared (6: dish, device)")] = 6,
    top: Annotated[int, Query(ge=1, le=200, description="Concepts listed at each end")] = 10,
) -> ConceptGaps:
    """``engine.graph.representation_gaps`` against a uniform prior over the concepts at ``depth``."""

    def compute() -> ConceptGaps:
        rows = [ConceptGap(**json_safe(r)) for r in representation_gaps(state.ws, depth=depth).to_pylist()]
        return ConceptGaps(depth=depth, concepts=len(rows), over=rows[:top], under=rows[::-1][:top])

    return state.answers.get(("gaps", depth, top), compute)


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
    def compute() -> ConceptNeighbourhood | str:
        try:
            return ConceptNeighbourhood(**json_safe(concept_neighbourhood(state.ws, concept)))
        except ConceptNotFound as e:  # remembered too (its message): a miss costs as much as a hit
            return str(e)

    result = state.answers.get(("concept", concept), compute)
    if isinstance(result, str):
        raise ConceptNotFound(result)  # api/errors.py answers 404
    return result
