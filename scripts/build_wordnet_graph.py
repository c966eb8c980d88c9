"""Convert WordNet 3.0's noun database (Debian wordnet-base) into the committed concept tables.

Run once, from the repository root; the output is committed so that nothing reads WordNet at run
time:

    PYTHONPATH=$PWD .venv/bin/python scripts/build_wordnet_graph.py
    PYTHONPATH=$PWD .venv/bin/python scripts/build_wordnet_graph.py --wordnet-dir /usr/share/wordnet \
        --out engine/graph/data

Writes ``wordnet_concepts.parquet``, ``wordnet_edges.parquet``, ``wordnet_lemmas.parquet``,
``wordnet_morph.parquet`` and ``wordnet_words.parquet``
(zstd, fixed writer options, so the same WordNet files give the same bytes) and prints the
counts, the sizes and the time it took.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import pyarrow.parquet as pq

from engine.graph.wordnet import WORDNET_DIR, read_wordnet

DEFAULT_OUT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "engine", "graph", "data"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet-dir", default=WORDNET_DIR, help="folder with data.noun, index.noun...")
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder for the Parquet tables")
    args = parser.parse_args()
    started = time.perf_counter()
    try:
        tables = read_wordnet(args.wordnet_dir)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    for name, table in tables.items():
        path = os.path.join(args.out, f"wordnet_{name}.parquet")
        # zstd level 19: written once, read often; the whole set stays a few MB in git
        pq.write_table(table, path, compression="zstd", compression_level=19, store_schema=True)
        print(f"{path}: {table.num_rows} rows, {os.path.getsize(path) / 1e6:.2f} MB")
    print(f"built in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
