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
from engine.catalog import connect_catalog
from engine.graph.concept_queries import concept_neighbourhood, representation_gaps

router = APIRouter(
    tags=["concepts"],
    dependencies=[ReadScope],
    responses={**ERROR_RESPONSES, 404: {"model": ErrorBody, "description": "no such concept"}},
)

MAX_ID = 2**63 - 1  # concept ids are BIGINT


@router.get("/concepts", response_model=list[ConceptMatch])
def search_concepts(
    state: State,
    q: Annotated[str, Query(min_length=1, max_length=100, description="Part of a synset name or lemma")],
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> list[ConceptMatch]:
    """Concepts whose synset or a lemma contains ``q`` (any case, spaces as underscores): exact
    names first, then the most samples (rolled up)."""
    term = q.strip().lower().replace(" ", "_")
    if not term:
        raise ApiError(422, "invalid_request", "q is empty")
    con = connect_catalog(state.ws)
    try:
        rows = con.sql(
            "SELECT n.concept_id, n.synset, n.depth, n.n_direct, n.n_rollup FROM concept_counts n "
            "JOIN concepts c USING (concept_id) "
            "WHERE contains(lower(n.synset), ?) OR contains(lower(array_to_string(c.lemmas, ' ')), ?) "
            "ORDER BY split_part(n.synset, '.', 1) <> ?, n.n_rollup DESC, n.synset LIMIT ?",
            params=[term, term, term, limit],
        ).to_arrow_table()
    finally:
        con.close()
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
