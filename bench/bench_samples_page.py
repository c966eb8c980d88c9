"""Benchmark: one page of GET /v1/samples (the dashboard's explorer) on a curated workspace.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_samples_page.py --workspace /tmp/zcurate-scale-50000/ws
    PYTHONPATH=$PWD .venv/bin/python bench/bench_samples_page.py --workspace ws --repeat 9 --json /tmp/p.json

The explorer's page query joins samples, signals (itself signals + embeddings + safety + OCR) and
dedup, all DuckDB views over the workspace's Parquet shards, so every request reads them again.
**ours** is the route's ``engine.catalog.sample_page``: the page and the filter's total from
one query (``count(*) OVER ()`` before LIMIT). **baseline** is what the route did before: a count
query, then the page query. Each opens its own connection, alternating, for each filter; the
answers are compared (same total, same rows). Medians of --repeat runs, in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from api.routes.samples import sample_query
from api.schemas import SampleFilter
from engine.catalog import CARD_SQL, connect_catalog, sample_page, sample_where
from engine.workspace import Workspace

FILTERS = {
    "first page": {},
    "sorted by -clip_score": {"sort": "-clip_score"},
    "concept animal.n.01": {"concept": "animal.n.01"},
    "caption contains 'flag'": {"caption": "flag"},
    "has text, clip_score >= 0.25": {"has_text": True, "clip_score_min": 0.25},
    "near duplicates": {"near_duplicate": True},
    "deep page (offset 40,000)": {"offset": 40_000},
}


def baseline_page(ws: Workspace, f: SampleFilter) -> tuple[int, list[dict]]:
    """The route before: a count query, then the page query."""
    con = connect_catalog(ws)
    where, params = sample_where(con, sample_query(f))
    total = con.execute(f"SELECT count(*) FROM ({CARD_SQL}{where})", params).fetchall()[0][0]
    column, descending = f.sort.lstrip("-"), f.sort.startswith("-")
    order = f" ORDER BY {column} {'DESC' if descending else 'ASC'} NULLS LAST, sample_id"
    sql = f"SELECT * FROM ({CARD_SQL}{where}){order} LIMIT ? OFFSET ?"
    rows = con.sql(sql, params=[*params, f.limit, f.offset]).to_arrow_table().to_pylist()
    con.close()
    return total, rows


def ours_page(ws: Workspace, f: SampleFilter) -> tuple[int, list[dict]]:
    return sample_page(ws, sample_query(f))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--limit", type=int, default=48, help="page size (the explorer's)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    ws = Workspace(args.workspace)
    con = connect_catalog(ws)
    usable = con.execute("SELECT count(*) FROM samples WHERE status = 'ok'").fetchall()[0][0]
    rows = []
    print(f"{usable:,} usable samples in {args.workspace}")
    print("| filter | total | baseline s | ours s | baseline / ours |")
    print("|---|---:|---:|---:|---:|")
    for name, params in FILTERS.items():
        f = SampleFilter(limit=args.limit, **params)
        times = {"baseline": [], "ours": []}
        answers = {}
        for _ in range(args.repeat):
            for label, fn in (("baseline", baseline_page), ("ours", ours_page)):
                t0 = time.perf_counter()
                answers[label] = fn(ws, f)
                times[label].append(time.perf_counter() - t0)
        if answers["baseline"] != answers["ours"]:
            raise SystemExit(f"{name}: the two answers differ")
        base, ours = statistics.median(times["baseline"]), statistics.median(times["ours"])
        row = {"filter": name, "total": answers["ours"][0], "baseline_s": round(base, 3)}
        row["ours_s"] = round(ours, 3)
        rows.append(row)
        print(f"| {name} | {row['total']:,} | {base:.3f} | {ours:.3f} | {base / ours:.2f} |")
    con.close()
    if args.json:
        result = {"workspace": args.workspace, "usable": usable, "repeat": args.repeat, "rows": rows}
        result["load_after"] = round(os.getloadavg()[0], 2)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
