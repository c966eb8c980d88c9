"""/v1/samples: a filtered page of usable samples with the total count, one sample in full, and
the near-duplicate communities (the dashboard's explorer and overview).

Each answer is one parameterised query over the catalog's views; nothing the client sends is
pasted into SQL but the column names of a fixed list.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.auth import ReadScope
from api.deps import State
from api.errors import ERROR_RESPONSES, ApiError, ErrorBody
from api.sandbox import json_safe
from api.schemas import (
    RANGE_COLUMNS,
    SAMPLE_ID_PATTERN,
    Communities,
    SampleCard,
    SampleDetail,
    SampleFilter,
    SamplePage,
)
from engine.catalog import connect_catalog

router = APIRouter(
    tags=["samples"],
    dependencies=[ReadScope],
    responses={**ERROR_RESPONSES, 404: {"model": ErrorBody, "description": "no such sample or concept"}},
)
SampleId = Annotated[str, Path(pattern=SAMPLE_ID_PATTERN, description="A sample id (32 hex digits)")]
MAX_ID = 2**63 - 1  # concept ids are BIGINT

CARD_SQL = """
    SELECT s.sample_id, s.caption, g.clip_score, g.nsfw_score, g.text_area_ratio, g.blur, g.width, g.height,
        g.ocr_text <> '' AS has_text, d.community_id
    FROM samples s JOIN signals g USING (sample_id) LEFT JOIN dedup d USING (sample_id)"""


def resolve_concept(con, concept: str) -> int:
    """A concept id from an id or a synset name; 404 when the graph lacks it."""
    if concept.isdigit():
        params, sql = [int(concept)], "SELECT concept_id FROM concepts WHERE concept_id = ?"
        if params[0] > MAX_ID:
            raise ApiError(404, "not_found", f"no concept {concept}")
    else:
        params, sql = [concept], "SELECT concept_id FROM concepts WHERE synset = ?"
    rows = con.execute(sql, params).fetchall()
    if not rows:
        raise ApiError(404, "not_found", f"no concept {concept} in this workspace's graph")
    return rows[0][0]


def filter_sql(con, f: SampleFilter) -> tuple[str, list]:
    """(WHERE clause, parameters) over ``CARD_SQL``'s aliases for the filter's conditions."""
    where, params = ["s.status = 'ok'"], []
    for column in RANGE_COLUMNS:
        for suffix, op in (("min", ">="), ("max", "<=")):
            value = getattr(f, f"{column}_{suffix}")
            if value is not None:
                where.append(f"g.{column} {op} ?")
                params.append(value)
    if f.concept is not None:
        where.append(
            "s.sample_id IN (SELECT t.sample_id FROM tags t JOIN concept_ancestors a USING (concept_id) "
            "WHERE a.ancestor_id = ?)"
        )
        params.append(resolve_concept(con, f.concept))
    if f.has_text is not None:
        where.append("g.ocr_text <> ''" if f.has_text else "g.ocr_text = ''")  # null: OCR not run, neither
    if f.community is not None:
        where.append("d.community_id = ?")
        params.append(f.community)
    if f.near_duplicate is not None:
        inside = "s.sample_id IN (SELECT unnest(sample_ids) FROM near_duplicates)"
        where.append(inside if f.near_duplicate else f"NOT ({inside})")
    if f.caption is not None:
        where.append("contains(lower(s.caption), lower(?))")
        params.append(f.caption)
    return " WHERE " + " AND ".join(where), params


def sample_page(con, f: SampleFilter) -> tuple[int, list[dict]]:
    """(total matching the filter, the page's card rows) in one pass over the joined Parquet views:
    the window counts before LIMIT, so there is no second query for the total."""
    where, params = filter_sql(con, f)
    column, descending = f.sort.lstrip("-"), f.sort.startswith("-")
    order = f" ORDER BY {column} {'DESC' if descending else 'ASC'} NULLS LAST, sample_id"
    sql = f"SELECT *, count(*) OVER () AS _total FROM ({CARD_SQL}{where}){order} LIMIT ? OFFSET ?"
    rows = con.sql(sql, params=[*params, f.limit, f.offset]).to_arrow_table().to_pylist()
    if not rows:  # a page past the end has no row to carry the total
        return con.execute(f"SELECT count(*) FROM ({CARD_SQL}{where})", params).fetchall()[0][0], []
    total = rows[0]["_total"]
    return total, [{k: v for k, v in row.items() if k != "_total"} for row in rows]


@router.get("/samples", response_model=SamplePage)
def list_samples(state: State, f: Annotated[SampleFilter, Query()]) -> SamplePage:
    con = connect_catalog(state.ws)
    try:
        total, rows = sample_page(con, f)
    finally:
        con.close()
    cards = [SampleCard(**json_safe(row)) for row in rows]
    return SamplePage(total=total, offset=f.offset, limit=f.limit, samples=cards)


@router.get("/samples/{sample_id}", response_model=SampleDetail)
def get_sample(sample_id: SampleId, state: State) -> SampleDetail:
    con = connect_catalog(state.ws)
    try:

        def rows(sql: str) -> list[dict]:
            return json_safe(con.sql(sql, params=[sample_id]).to_arrow_table().to_pylist())

        sample = rows("SELECT * FROM samples WHERE sample_id = ?")
        if not sample:
            raise ApiError(404, "not_found", f"no sample {sample_id}")
        # ocr_lines (boxes of every line) stay out: the text is in ocr_text, and a poster has hundreds
        signals = rows("SELECT * EXCLUDE (ocr_lines) FROM signals WHERE sample_id = ?")
        dedup = rows(
            "SELECT d.*, (SELECT count(*) FROM dedup c WHERE c.community_id = d.community_id) "
            "AS community_size FROM dedup d WHERE sample_id = ?"
        )
        tags = rows(
            "SELECT t.concept_id, c.synset, t.source, t.score, t.span FROM tags t JOIN concepts c "
            "USING (concept_id) WHERE t.sample_id = ? ORDER BY t.score DESC, c.synset, t.source"
        )
    finally:
        con.close()
    return SampleDetail(
        sample=sample[0],
        signals=signals[0] if signals else None,
        dedup=dedup[0] if dedup else None,
        tags=tags,
    )


@router.get("/communities", response_model=Communities)
def list_communities(
    state: State, limit: Annotated[int, Query(ge=0, le=1000, description="How many of the largest")] = 20
) -> Communities:
    def compute() -> Communities:
        con = connect_catalog(state.ws)
        try:
            n, samples = con.execute(
                "SELECT count(*), coalesce(sum(n_samples), 0) FROM near_duplicates"
            ).fetchall()[0]
            largest = con.sql(
                "SELECT community_id, n_samples, max_sim FROM near_duplicates "
                "ORDER BY n_samples DESC, community_id LIMIT ?",
                params=[limit],
            ).to_arrow_table()
        finally:
            con.close()
        return Communities(communities=n, samples=samples, largest=json_safe(largest.to_pylist()))

    return state.answers.get(("communities", limit), compute)
