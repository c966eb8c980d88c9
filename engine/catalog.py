"""The DuckDB catalog: views over the workspace's Parquet tables, and queries over them.

``WS/catalog.duckdb`` holds one view per table (``samples``, ``signals``, each image stage's
table) reading every shard through a glob, so new shards are visible without rebuilding it.
``signals`` also carries the image stages' signal columns (``schema.SIGNAL_COLUMNS``: OCR text,
clip_score, ...) joined in by sample_id, null where a stage has not run. Derived views:

* ``sample_signals``: usable samples joined with their signals;
* ``reject_reasons``: rejected samples counted by reason;
* ``image_duplicates``: images that come with more than one usable caption (exact duplicates);
* ``near_duplicates``: communities of table ``dedup`` (engine/dedup.py) with more than one sample;
* ``zcurate_catalog``: the workspace root the views were made for; a reader that finds another
  root (the workspace was moved or copied) rebuilds the catalog.

The file is rebuilt atomically (new file, then rename), so ``duckdb WS/catalog.duckdb``,
``zcurate sql`` and the API always open a complete catalog. Workspaces on object storage get
the same views in an in-memory database (DuckDB then needs its httpfs extension).
"""

from __future__ import annotations

import os
import uuid

import duckdb
import pyarrow as pa

from engine import schema
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
    # --- concept graph (engine/graph.py, engine/tagging.py) ---
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
        return f"read_parquet({_quote(ws.local_uri(name, '*.parquet'))}, union_by_name = true)"
    # No shards yet: an empty table with the right columns, so queries still run.
    # DuckDB cannot scan Arrow float16 (the embeddings vectors): an empty table reads them as float32.
    empty = pa.schema(
        [
            f.with_type(pa.list_(pa.float32(), f.type.list_size))
            if pa.types.is_fixed_size_list(f.type) and pa.types.is_float16(f.type.value_type)
            else f
            for f in schema.TABLES[name]
        ]
    ).empty_table()
    con.register("empty_arrow", empty)
    con.execute(f"CREATE OR REPLACE TABLE _empty_{name} AS SELECT * FROM empty_arrow")
    con.unregister("empty_arrow")
    return f"_empty_{name}"


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


# Numeric signals summarised by `zcurate stats`.
STAT_SIGNALS = (
    "width",
    "height",
    "file_bytes",
    "compression_ratio",
    "border_variance",
    "jpeg_bpp",
    "blur",
    "colourfulness",
    "entropy",
    "caption_chars",
    "caption_words",
)


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
        for column in STAT_SIGNALS:
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
