"""Questions about a workspace's concepts, answered over the catalog (``engine.catalog``).

``resolve_concept`` turns an id or a synset name into a concept id (the one resolver the CLI, the
API and ``engine.curation.gaps`` share; ``ConceptNotFound`` when the graph lacks it);
``concept_neighbourhood`` gives a concept with its parents, children, siblings, parts and wholes and
their sample counts; ``subtree_samples`` the samples tagged with a concept or anything below it;
``representation_gaps`` the concepts ranked from most over- to most under-represented against a
prior; ``search_concepts`` concepts by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    import duckdb

    from engine.workspace import Workspace

MAX_CONCEPT_ID = 2**63 - 1  # concept ids are int64 (schema.CONCEPTS): a larger one names no concept


class ConceptNotFound(ValueError):
    """The workspace's graph has no such concept (the API answers 404)."""


def resolve_concept(con: duckdb.DuckDBPyConnection, concept: str | int) -> int:
    """A concept id from an id (an int or a string of digits) or a synset name.

    Raises:
        ConceptNotFound: the graph lacks it (an id outside int64 included).
    """
    text = str(concept)
    rows = []
    if not (text.isascii() and text.isdigit()):
        rows = con.sql("SELECT concept_id FROM concepts WHERE synset = ?", params=[text]).fetchall()
    elif int(text) <= MAX_CONCEPT_ID:
        rows = con.sql("SELECT concept_id FROM concepts WHERE concept_id = ?", params=[int(text)]).fetchall()
    if not rows:
        raise ConceptNotFound(
            f"concept {concept!r} is not in this workspace's graph (run 'zcurate tag' first?)"
        )
    return rows[0][0]


_COUNTED = """
    SELECT c.concept_id, c.synset, c.lemmas, c.gloss, c.depth, c.source, n.n_direct, n.n_rollup
    FROM concepts c JOIN concept_counts n USING (concept_id)"""


def concept_neighbourhood(ws: Workspace, concept: str | int) -> dict:
    """A concept with its parents, children and siblings (is_a/instance_of), each with counts.

    Siblings are the other children of its parents. ``part_of`` neighbours come separately as
    ``parts`` (its parts) and ``wholes`` (what it is part of).
    """
    from engine.catalog import connect_catalog

    con = connect_catalog(ws)
    try:
        concept_id = resolve_concept(con, concept)

        def rows(sql: str) -> list[dict]:
            return con.sql(sql, params=[concept_id]).to_arrow_table().to_pylist()

        taxonomy = "('is_a', 'instance_of')"
        order = " ORDER BY n_rollup DESC, synset"
        return {
            "concept": rows(f"SELECT * FROM ({_COUNTED}) WHERE concept_id = ?")[0],
            "parents": rows(
                f"SELECT * FROM ({_COUNTED}) WHERE concept_id IN (SELECT parent_id FROM concept_edges "
                f"WHERE child_id = ? AND kind IN {taxonomy})" + order
            ),
            "children": rows(
                f"SELECT * FROM ({_COUNTED}) WHERE concept_id IN (SELECT child_id FROM concept_edges "
                f"WHERE parent_id = ? AND kind IN {taxonomy})" + order
            ),
            "siblings": rows(
                f"WITH me AS (SELECT ?::BIGINT AS id), ps AS (SELECT parent_id FROM concept_edges, me "
                f"WHERE child_id = me.id AND kind IN {taxonomy}) "
                f"SELECT * FROM ({_COUNTED}) WHERE concept_id IN (SELECT child_id FROM concept_edges "
                f"WHERE parent_id IN (SELECT parent_id FROM ps) AND kind IN {taxonomy}) "
                f"AND concept_id <> (SELECT id FROM me)" + order
            ),
            "parts": rows(
                f"SELECT * FROM ({_COUNTED}) WHERE concept_id IN (SELECT child_id FROM concept_edges "
                f"WHERE parent_id = ? AND kind = 'part_of')" + order
            ),
            "wholes": rows(
                f"SELECT * FROM ({_COUNTED}) WHERE concept_id IN (SELECT parent_id FROM concept_edges "
                f"WHERE child_id = ? AND kind = 'part_of')" + order
            ),
        }
    finally:
        con.close()


def subtree_samples(ws: Workspace, concept: str | int, limit: int | None = 100) -> pa.Table:
    """Samples tagged with the concept or any descendant: sample_id, caption, uri, the tag that
    put it there (synset, source, score) and its distance below the concept; sorted by sample_id."""
    from engine.catalog import connect_catalog

    con = connect_catalog(ws)
    try:
        concept_id = resolve_concept(con, concept)
        sql = """
            SELECT t.sample_id, s.caption, s.uri, c.synset, t.source, t.score, a.distance
            FROM tags t JOIN concept_ancestors a USING (concept_id)
            JOIN concepts c USING (concept_id) JOIN samples s USING (sample_id)
            WHERE a.ancestor_id = ?
            QUALIFY row_number() OVER (PARTITION BY t.sample_id ORDER BY a.distance, t.score DESC,
                t.source, c.synset) = 1
            ORDER BY t.sample_id"""
        params: list = [concept_id]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return con.sql(sql, params=params).to_arrow_table()
    finally:
        con.close()


def representation_gaps(ws: Workspace, prior: dict[str, float] | None = None, depth: int = 6) -> pa.Table:
    """Concepts ranked from most over- to most under-represented relative to a target prior.

    Args:
        prior: synset -> target weight (normalised here). Default: uniform over the workspace
            graph's concepts at ``depth`` (concepts absent from the data are the most
            under-represented).
        depth: the level compared when no prior is given (6: device, dish, star, ...).

    Returns rows of concept_id, synset, n_rollup, share (of the compared concepts' rolled-up
    count), target, ratio = share / target; sorted by ratio descending, then synset.
    """
    from engine.catalog import connect_catalog

    con = connect_catalog(ws)
    try:
        if prior is None:
            base = con.sql(
                "SELECT concept_id, synset, n_rollup, 1.0 AS weight FROM concept_counts WHERE depth = ?",
                params=[depth],
            ).to_arrow_table()
        else:
            wanted = pa.table({"synset": list(prior), "weight": [float(w) for w in prior.values()]})
            con.register("prior_weights", wanted)
            base = con.sql(
                "SELECT c.concept_id, p.synset, coalesce(c.n_rollup, 0) AS n_rollup, p.weight "
                "FROM prior_weights p LEFT JOIN concept_counts c USING (synset) ORDER BY p.synset"
            ).to_arrow_table()
            missing = [r["synset"] for r in base.to_pylist() if r["concept_id"] is None]
            if missing:
                raise ValueError(f"prior names concepts not in the graph: {', '.join(missing[:5])}")
        con.register("gap_base", base)
        return con.sql(
            """
            WITH totals AS (SELECT sum(n_rollup) AS n, sum(weight) AS w FROM gap_base)
            SELECT concept_id, synset, n_rollup,
                CASE WHEN totals.n > 0 THEN n_rollup / totals.n ELSE 0 END AS share,
                weight / totals.w AS target,
                CASE WHEN totals.n > 0 THEN (n_rollup / totals.n) / (weight / totals.w) ELSE 0 END AS ratio
            FROM gap_base, totals ORDER BY ratio DESC, synset"""
        ).to_arrow_table()
    finally:
        con.close()


def search_concepts(ws: Workspace, term: str, limit: int = 20) -> pa.Table:
    """Concepts whose synset or a lemma contains ``term`` (any case; spaces match underscores, as
    in lemma names): exact names first (the synset's word is the term), then the most samples
    (rolled up), then by synset.

    Returns rows of concept_id, synset, depth, n_direct, n_rollup; at most ``limit``.

    Raises:
        ValueError: the term is empty or only spaces.
    """
    from engine.catalog import connect_catalog

    term = term.strip().lower().replace(" ", "_")
    if not term:
        raise ValueError("the search term is empty")
    con = connect_catalog(ws)
    try:
        return con.sql(
            "SELECT n.concept_id, n.synset, n.depth, n.n_direct, n.n_rollup FROM concept_counts n "
            "JOIN concepts c USING (concept_id) "
            "WHERE contains(lower(n.synset), ?) OR contains(lower(array_to_string(c.lemmas, ' ')), ?) "
            "ORDER BY split_part(n.synset, '.', 1) <> ?, n.n_rollup DESC, n.synset LIMIT ?",
            params=[term, term, term, limit],
        ).to_arrow_table()
    finally:
        con.close()
