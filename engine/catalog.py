"""The DuckDB catalog: views over the workspace's Parquet tables, and queries over them.

``WS/catalog.duckdb`` holds one view per table (``samples``, ``signals``, each image stage's
table) reading every shard through a glob, so new shards are visible without rebuilding it.
``signals`` also carries the image stages' signal columns (``schema.SIGNAL_COLUMNS``: OCR text,
clip_score, ...) joined in by sample_id, null where a stage has not run. Derived views:

* ``sample_signals``: usable samples joined with their signals;
* ``reject_reasons``: rejected samples counted by reason;
* ``image_duplicates``: images that come with more than one usable caption (exact duplicates);
* ``near_duplicates``: communities of table ``dedup`` (engine/vectors/dedup.py) with more than one
  sample;
* ``zcurate_catalog``: the workspace root the views were made for; a reader that finds another
  root (the workspace was moved or copied) rebuilds the catalog;
* ``models``: the embedding models the workspace holds (``engine.embedding_models``), which one is
  active (``embeddings``, ``clip_score`` and ``near_duplicates`` are the active model's), and
  ``clip_scores``: every model's clip_score per sample, with the model it came from.

The file is rebuilt atomically (new file, then rename), so ``duckdb WS/catalog.duckdb``,
``zcurate sql`` and the API always open a complete catalog. Workspaces on object storage get
the same views in an in-memory database (DuckDB then needs its httpfs extension).

Queries over the views: ``run_sql`` (any one statement), ``dataset_stats`` (`zcurate stats`,
GET /v1/stats), and the dashboard explorer's ``sample_page`` (a ``SampleQuery``), ``sample_detail``
and ``communities``. It writes only the catalog file; concept questions are in
``engine.graph.concept_queries``.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from engine import schema
from engine.graph.concept_queries import resolve_concept
from engine.workspace import Workspace

DERIVED_VIEWS = {
    "sample_signals": """
        SELECT s.*, g.* EXCLUDE (sample_id, image_id)
        FROM samples s JOIN signals g USING (sample_id)
        WHERE s.status = 'ok'""",
    "reject_reasons": """
        SELECT reject_reason, count(*) AS n
        FROM samples WHERE status = 'rejected'
        GROUP BY reject_reason ORDER BY n DESC, reject_reason""",
    "image_duplicates": """
        SELECT image_id, count(*) AS n_samples, list(sample_id ORDER BY sample_id) AS sample_ids
        FROM samples WHERE status = 'ok'
        GROUP BY image_id HAVING count(*) > 1""",
    "near_duplicates": """
        SELECT community_id, count(*) AS n_samples, list(sample_id ORDER BY sample_id) AS sample_ids,
               max(nearest_sim) AS max_sim
        FROM dedup GROUP BY community_id HAVING count(*) > 1""",
    # --- concept graph (engine/graph/concept_graph.py, engine/graph/tagging.py) ---
    # Samples per concept: tagged directly (any source, and per source) and rolled up the is_a
    # hierarchy (a lorikeet sample counts for parrot, bird, animal...), with the BM25 idf of the
    # rolled-up count over the usable samples.
    "concept_counts": """
        WITH total AS (SELECT count(*) AS n FROM samples WHERE status = 'ok'),
        direct AS (
            SELECT concept_id, count(DISTINCT sample_id) AS n_direct,
                count(DISTINCT sample_id) FILTER (WHERE source = 'caption') AS n_caption,
                count(DISTINCT sample_id) FILTER (WHERE source = 'ocr') AS n_ocr,
                count(DISTINCT sample_id) FILTER (WHERE source = 'clip') AS n_clip
            FROM tags GROUP BY concept_id),
        rolled AS (
            SELECT a.ancestor_id AS concept_id, count(DISTINCT t.sample_id) AS n_rollup
            FROM tags t JOIN concept_ancestors a USING (concept_id) GROUP BY a.ancestor_id)
        SELECT c.concept_id, c.synset, c.depth, c.source,
            coalesce(d.n_direct, 0) AS n_direct, coalesce(d.n_caption, 0) AS n_caption,
            coalesce(d.n_ocr, 0) AS n_ocr, coalesce(d.n_clip, 0) AS n_clip,
            coalesce(r.n_rollup, 0) AS n_rollup,
            ln(1 + (total.n - coalesce(r.n_rollup, 0) + 0.5) / (coalesce(r.n_rollup, 0) + 0.5)) AS idf
        FROM concepts c CROSS JOIN total
        LEFT JOIN direct d USING (concept_id) LEFT JOIN rolled r USING (concept_id)""",
    # BM25 per (sample, concept): a sample is a document whose terms are its tagged concepts
    # (tf = matches over all sources), k1 = 1.2 and b = 0.75 (the usual BM25 constants).
    "tag_rarity": """
        WITH doc AS (SELECT sample_id, concept_id, sum(hits) AS tf FROM tags GROUP BY ALL),
        lengths AS (SELECT sample_id, count(*) AS dl FROM doc GROUP BY sample_id),
        mean AS (SELECT avg(dl) AS avgdl FROM lengths)
        SELECT d.sample_id, d.concept_id, c.synset, d.tf, l.dl, c.n_rollup, c.idf,
            c.idf * d.tf * (1.2 + 1) / (d.tf + 1.2 * (1 - 0.75 + 0.75 * l.dl / mean.avgdl)) AS bm25
        FROM doc d JOIN lengths l USING (sample_id) CROSS JOIN mean
        JOIN concept_counts c USING (concept_id)""",
    # How many concepts at each depth have at least 1, 10, 100, 1000 samples (rolled up).
    "concept_coverage": """
        SELECT depth, count(*) AS concepts,
            count(*) FILTER (WHERE n_rollup >= 1) AS with_1,
            count(*) FILTER (WHERE n_rollup >= 10) AS with_10,
            count(*) FILTER (WHERE n_rollup >= 100) AS with_100,
            count(*) FILTER (WHERE n_rollup >= 1000) AS with_1000
        FROM concept_counts GROUP BY depth ORDER BY depth""",
}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _table_relation(con: duckdb.DuckDBPyConnection, ws: Workspace, name: str) -> str:
    """SQL naming a table's rows: its shards through a glob, or an empty table with its columns."""
    if ws.list_shards(name):
        return f"read_parquet({_quote(ws.local_uri(ws.table_rel(name), '*.parquet'))}, union_by_name = true)"
    # No shards yet: an empty table with the right columns, so queries still run.
    # DuckDB cannot scan Arrow float16 (the embeddings vectors): an empty table reads them as float32.
    empty = pa.schema(
        [
            f.with_type(pa.list_(pa.float32(), f.type.list_size))
            if pa.types.is_fixed_size_list(f.type) and pa.types.is_float16(f.type.value_type)
            else f
            for f in ws.table_schema(name)
        ]
    ).empty_table()
    table = "_empty_" + name.replace("@", "_").replace("-", "_")
    con.register("empty_arrow", empty)
    con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM empty_arrow")
    con.unregister("empty_arrow")
    return table


def _model_views(con: duckdb.DuckDBPyConnection, ws: Workspace) -> None:
    """``models`` (one row per embedding model) and ``clip_scores`` (every model's scores)."""
    from engine.embedding_models import active_model, list_models

    models, active = list_models(ws), active_model(ws)
    rows = [
        {"key": m.key, "model_id": m.model_id, "spec": m.spec, "dim": m.dim, "active": m.key == active.key}
        for m in models
    ]
    columns = [("key", pa.string()), ("model_id", pa.string()), ("spec", pa.string()), ("dim", pa.int32())]
    table = pa.Table.from_pylist(rows, schema=pa.schema([*columns, ("active", pa.bool_())]))
    con.register("models_arrow", table)
    con.execute("CREATE OR REPLACE TABLE models AS SELECT * FROM models_arrow")
    con.unregister("models_arrow")
    parts = [
        f"SELECT sample_id, {_quote(m.key)} AS model_key, model_id, clip_score "
        f"FROM {_table_relation(con, ws, 'embeddings@' + m.key)}"
        for m in models
    ]
    empty = "SELECT NULL::VARCHAR AS sample_id, NULL::VARCHAR AS model_key, NULL::VARCHAR AS model_id, "
    empty += "NULL::FLOAT AS clip_score WHERE false"
    con.execute(f"CREATE OR REPLACE VIEW clip_scores AS {' UNION ALL '.join(parts) or empty}")


def _signals_sql(relations: dict[str, str]) -> str:
    """``signals`` with the columns of ``schema.SIGNAL_COLUMNS`` joined in by sample_id."""
    columns, joins = ["g.*"], []
    for i, (table, names) in enumerate(schema.SIGNAL_COLUMNS.items()):
        columns += [f"t{i}.{name}" for name in names]
        joins.append(f"LEFT JOIN {relations[table]} t{i} USING (sample_id)")
    return f"SELECT {', '.join(columns)} FROM {relations['signals']} g {' '.join(joins)}"


def create_views(con: duckdb.DuckDBPyConnection, ws: Workspace) -> None:
    """Create (or replace) every table view and derived view on ``con``."""
    relations = {name: _table_relation(con, ws, name) for name in schema.TABLES}
    for name, relation in relations.items():
        sql = _signals_sql(relations) if name == "signals" else f"SELECT * FROM {relation}"
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
    for name, sql in DERIVED_VIEWS.items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
    _model_views(con, ws)
    # The views hold absolute paths; remembering the root lets a reader spot a moved workspace.
    con.execute(
        f"CREATE OR REPLACE VIEW zcurate_catalog AS SELECT {_quote(ws.local_uri())} AS workspace_root"
    )


def refresh_catalog(ws: Workspace) -> str | None:
    """Rebuild ``WS/catalog.duckdb`` atomically; returns its path (None for remote workspaces)."""
    if not ws.is_local:
        return None
    final = ws.path(ws.catalog_file)
    tmp_dir = ws.path(ws.tmp)
    os.makedirs(tmp_dir, exist_ok=True)
    tmp = os.path.join(tmp_dir, f"{uuid.uuid4().hex}-{ws.catalog_file}")
    con = duckdb.connect(tmp)
    try:
        create_views(con, ws)
    finally:
        con.close()
    os.replace(tmp, final)
    return final


def connect_catalog(ws: Workspace) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the catalog (in-memory views for remote workspaces)."""
    if ws.is_local:
        path = ws.path(ws.catalog_file)
        if not os.path.exists(path):
            refresh_catalog(ws)
        con = duckdb.connect(path, read_only=True)
        if _catalog_root(con) == ws.local_uri():
            return con
        con.close()  # made for another location (the workspace was moved or copied): rebuild
        refresh_catalog(ws)
        return duckdb.connect(path, read_only=True)
    con = duckdb.connect()
    create_views(con, ws)
    return con


def _catalog_root(con: duckdb.DuckDBPyConnection) -> str | None:
    try:
        return con.sql("SELECT workspace_root FROM zcurate_catalog").fetchall()[0][0]
    except duckdb.Error:  # a catalog from before the root was recorded
        return None


def run_sql(ws: Workspace, sql: str, parameters: list | None = None) -> pa.Table:
    """Run one query over the catalog and return the result as Arrow."""
    con = connect_catalog(ws)
    try:
        relation = con.sql(sql, params=parameters or None)
        if relation is None:  # a statement with no result set
            return pa.table({})
        return relation.to_arrow_table()
    finally:
        con.close()


def dataset_stats(ws: Workspace) -> dict:
    """Counts by status, source and reason, warning counts, languages and signal quantiles."""
    con = connect_catalog(ws)
    try:

        def rows(sql: str) -> list[dict]:
            return con.sql(sql).to_arrow_table().to_pylist()

        totals = rows(
            "SELECT count(*) AS samples, count(*) FILTER (WHERE status = 'ok') AS ok, "
            "count(*) FILTER (WHERE status = 'rejected') AS rejected, "
            "count(DISTINCT image_id) FILTER (WHERE status = 'ok') AS distinct_images "
            "FROM samples"
        )[0]
        by_source = rows(
            "SELECT source_kind, source, count(*) AS samples, "
            "count(*) FILTER (WHERE status = 'ok') AS ok FROM samples "
            "GROUP BY ALL ORDER BY source_kind, source"
        )
        reasons = rows("SELECT * FROM reject_reasons")
        warnings = rows(
            "SELECT warning, count(*) AS n FROM "
            "(SELECT unnest(warnings) AS warning FROM samples) GROUP BY warning "
            "ORDER BY n DESC, warning"
        )
        languages = rows(
            "SELECT caption_lang, count(*) AS n FROM signals GROUP BY caption_lang "
            "ORDER BY n DESC, caption_lang LIMIT 10"
        )
        quantiles = []
        for column in schema.STAT_SIGNALS:
            q = rows(
                f"SELECT min({column}) AS min, quantile_cont({column}, 0.5) AS p50, "
                f"quantile_cont({column}, 0.95) AS p95, max({column}) AS max FROM signals"
            )[0]
            quantiles.append({"signal": column, **q})
        duplicates = rows(
            "SELECT count(*) AS images, coalesce(sum(n_samples), 0) AS samples FROM image_duplicates"
        )[0]
    finally:
        con.close()
    return {
        "totals": totals,
        "by_source": by_source,
        "reject_reasons": reasons,
        "warnings": warnings,
        "caption_languages": languages,
        "signals": quantiles,
        "image_duplicates": duplicates,
    }


# --- the dashboard's explorer: a filtered page of usable samples, one sample, the communities -------

# A card: what the explorer shows of a sample (schema.EXPLORER_SIGNALS with the caption, whether OCR
# found text, null when OCR has not run, and its near-duplicate community).
CARD_SQL = f"""
    SELECT s.sample_id, s.caption, {", ".join(f"g.{c}" for c in schema.EXPLORER_SIGNALS)},
        g.ocr_text <> '' AS has_text, d.community_id
    FROM samples s JOIN signals g USING (sample_id) LEFT JOIN dedup d USING (sample_id)"""
# Sort keys of a page: sample_id or a column of schema.EXPLORER_SIGNALS, "-" first for descending.
SORT_KEYS = tuple(
    sorted(["sample_id", *schema.EXPLORER_SIGNALS, *(f"-{c}" for c in schema.EXPLORER_SIGNALS)])
)


@dataclass
class SampleQuery:
    """Usable samples matching every given condition (None: no condition), and which page of them."""

    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  # column -> (min, max)
    concept: str | int | None = None  # tagged with it or a concept below it (id or synset name)
    has_text: bool | None = None  # OCR found text (True) or found none (False); OCR not run: neither
    community: str | None = None  # in this near-duplicate community (its representative's sample_id)
    near_duplicate: bool | None = None  # in a near-duplicate community of two or more
    caption: str | None = None  # the caption contains it (any case)
    sort: str = "sample_id"  # one of SORT_KEYS
    offset: int = 0
    limit: int = 60


def sample_where(con: duckdb.DuckDBPyConnection, q: SampleQuery) -> tuple[str, list]:
    """(WHERE clause, parameters) over ``CARD_SQL``'s aliases for the query's conditions.

    Raises:
        ValueError: a range column outside ``schema.EXPLORER_SIGNALS``.
        engine.graph.concept_queries.ConceptNotFound: the query's concept is not in the graph.
    """
    where, params = ["s.status = 'ok'"], []
    for column, bounds in q.ranges.items():
        if column not in schema.EXPLORER_SIGNALS:  # the one name pasted into the SQL: a fixed list
            raise ValueError(
                f"no range filter on {column!r}: use one of {', '.join(schema.EXPLORER_SIGNALS)}"
            )
        for value, op in zip(bounds, (">=", "<="), strict=True):
            if value is not None:
                where.append(f"g.{column} {op} ?")
                params.append(value)
    if q.concept is not None:
        where.append(
            "s.sample_id IN (SELECT t.sample_id FROM tags t JOIN concept_ancestors a USING (concept_id) "
            "WHERE a.ancestor_id = ?)"
        )
        params.append(resolve_concept(con, q.concept))
    if q.has_text is not None:
        where.append("g.ocr_text <> ''" if q.has_text else "g.ocr_text = ''")  # null: OCR not run, neither
    if q.community is not None:
        where.append("d.community_id = ?")
        params.append(q.community)
    if q.near_duplicate is not None:
        inside = "s.sample_id IN (SELECT unnest(sample_ids) FROM near_duplicates)"
        where.append(inside if q.near_duplicate else f"NOT ({inside})")
    if q.caption is not None:
        where.append("contains(lower(s.caption), lower(?))")
        params.append(q.caption)
    return " WHERE " + " AND ".join(where), params


def sample_page(ws: Workspace, q: SampleQuery) -> tuple[int, list[dict]]:
    """(how many usable samples match, the requested page of their cards): ``CARD_SQL`` rows.

    One pass over the joined Parquet views: a window counts the matches before LIMIT, so there is
    no second query for the total (but for a page past the end, which has no row to carry it).

    Raises:
        ValueError: a sort key or range column outside the explorer's list.
        engine.graph.concept_queries.ConceptNotFound: the query's concept is not in the graph.
    """
    if q.sort not in SORT_KEYS:
        raise ValueError(f"cannot sort by {q.sort!r}: use one of {', '.join(SORT_KEYS)}")
    column, descending = q.sort.lstrip("-"), q.sort.startswith("-")
    order = f" ORDER BY {column} {'DESC' if descending else 'ASC'} NULLS LAST, sample_id"
    con = connect_catalog(ws)
    try:
        where, params = sample_where(con, q)
        sql = f"SELECT *, count(*) OVER () AS _total FROM ({CARD_SQL}{where}){order} LIMIT ? OFFSET ?"
        rows = con.sql(sql, params=[*params, q.limit, q.offset]).to_arrow_table().to_pylist()
        if not rows:
            return con.execute(f"SELECT count(*) FROM ({CARD_SQL}{where})", params).fetchall()[0][0], []
    finally:
        con.close()
    return rows[0]["_total"], [{k: v for k, v in row.items() if k != "_total"} for row in rows]


def sample_detail(ws: Workspace, sample_id: str) -> dict | None:
    """One sample in full, or None when there is no such sample.

    Returns ``{"sample": its samples row, "signals": its signals row without ocr_lines (or None),
    "dedup": its dedup row plus community_size (or None), "tags": [concept_id, synset, source,
    score, span], best score first}``.
    """
    con = connect_catalog(ws)
    try:

        def rows(sql: str) -> list[dict]:
            return con.sql(sql, params=[sample_id]).to_arrow_table().to_pylist()

        sample = rows("SELECT * FROM samples WHERE sample_id = ?")
        if not sample:
            return None
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
    return {
        "sample": sample[0],
        "signals": signals[0] if signals else None,
        "dedup": dedup[0] if dedup else None,
        "tags": tags,
    }


def communities(ws: Workspace, limit: int = 20) -> dict:
    """Near-duplicate communities of two or more samples: ``{"communities": how many, "samples": in
    them, "largest": [community_id, n_samples, max_sim], the ``limit`` largest first}``."""
    con = connect_catalog(ws)
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
    return {"communities": n, "samples": samples, "largest": largest.to_pylist()}
