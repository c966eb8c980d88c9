"""Score histograms for ``GET /v1/stats`` (the scores of ``schema.SCORE_SIGNALS``) and for a
manifest's weights: equal-width bins over each one's observed range."""

from __future__ import annotations

import duckdb

from engine import schema
from engine.catalog import connect_catalog
from engine.workspace import Workspace

BINS = 20  # 20 bins: fine enough to place a threshold at 5% of the range, readable as a bar chart


def histogram_sql(column: str, bins: int) -> str:
    """Bin i of ``bins`` holds lo + i*w <= x < lo + (i+1)*w with w = (hi - lo) / bins; the top
    edge hi falls in the last bin. One bin when every value is equal."""
    return f"""
        WITH v AS (SELECT {column}::DOUBLE AS x FROM signals WHERE isfinite({column}::DOUBLE)),
        r AS (SELECT min(x) AS lo, max(x) AS hi FROM v)
        SELECT least({bins - 1}, CASE WHEN r.hi > r.lo
            THEN floor((v.x - r.lo) / (r.hi - r.lo) * {bins}) ELSE 0 END)::INTEGER AS bin,
            count(*) AS n
        FROM v, r GROUP BY bin ORDER BY bin"""


def score_histograms(
    ws: Workspace, scores: tuple[str, ...] = schema.SCORE_SIGNALS, bins: int = BINS
) -> list[dict]:
    """One record per score: ``{"score", "count", "edges" (bins + 1 floats), "counts" (bins ints)}``;
    edges and counts are empty when no sample has the score."""
    con = connect_catalog(ws)
    try:
        out = []
        for column in scores:
            try:
                lo, hi, n = con.sql(
                    f"SELECT min({column})::DOUBLE, max({column})::DOUBLE, count({column}) FROM signals "
                    f"WHERE isfinite({column}::DOUBLE)"
                ).fetchall()[0]
            except duckdb.BinderException:  # an older catalog without this column
                continue
            if not n:
                out.append({"score": column, "count": 0, "edges": [], "counts": []})
                continue
            k = bins if hi > lo else 1
            counts = [0] * k
            for b, c in con.sql(histogram_sql(column, k)).fetchall():
                counts[b] += c
            width = (hi - lo) / k
            edges = [lo + i * width for i in range(k)] + [hi]
            out.append({"score": column, "count": n, "edges": edges, "counts": counts})
        return out
    finally:
        con.close()


def weight_histogram(path: str, bins: int = BINS) -> dict:
    """The ``weight`` column of a manifest Parquet file as ``score_histograms`` records it:
    equal-width bins over [min, max] (the top edge in the last bin; one bin when all are equal)."""
    import numpy as np
    import pyarrow.parquet as pq

    weights = pq.read_table(path, columns=["weight"])["weight"].to_numpy().astype(np.float64)
    weights = weights[np.isfinite(weights)]
    if not len(weights):
        return {"score": "weight", "count": 0, "edges": [], "counts": []}
    lo, hi = float(weights.min()), float(weights.max())
    counts, edges = np.histogram(weights, bins=bins if hi > lo else 1, range=(lo, hi))
    return {"score": "weight", "count": len(weights), "edges": edges.tolist(), "counts": counts.tolist()}
