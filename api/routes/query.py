"""POST /v1/query {"sql"}: one read-only SELECT over the catalog (see api/sandbox.py)."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import ReadScope
from api.deps import State
from api.errors import ERROR_RESPONSES, ApiError, ErrorBody
from api.sandbox import QueryError, QueryLimits, run_query
from api.schemas import QueryRequest, QueryResult

router = APIRouter(
    tags=["query"],
    dependencies=[ReadScope],
    responses={**ERROR_RESPONSES, 400: {"model": ErrorBody, "description": "refused, failed or timed out"}},
)


@router.post("/query", response_model=QueryResult)
def post_query(body: QueryRequest, state: State) -> QueryResult:
    s = state.settings
    limits = QueryLimits(
        max_rows=min(body.max_rows or s.query_max_rows, s.query_max_rows),
        max_bytes=s.query_max_bytes,
        timeout_s=s.query_timeout_s,
        memory_limit=s.query_memory_limit,
        threads=s.query_threads,
    )
    try:
        result = run_query(state.ws, body.sql, limits)
    except QueryError as e:
        raise ApiError(400, e.code, str(e)) from None
    return QueryResult(
        columns=result.columns, rows=result.rows, row_count=len(result.rows), truncated=result.truncated
    )
