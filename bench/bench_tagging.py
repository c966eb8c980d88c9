"""Benchmark: concept graph build time and caption n-gram tagging throughput on unique captions.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_tagging.py --json bench/results-tagging-unique.json
    PYTHONPATH=$PWD .venv/bin/python bench/bench_tagging.py --convert       # also time the WordNet conversion

Captions: openclipart's real titles + keywords (8,121 SVGs from Debian's openclipart-svg) and then
WordNet's glosses and usage examples (real English sentences, about 100k), each distinct string
once: no caption is tagged twice in a pass. Each goes through the full matcher (normalise,
longest match, plural forms, sense choice by context). The matcher caches one thing across
captions: each concept's gloss signature for the sense choice, built on first use. So two rates:

- **cold**: a matcher just built, every signature still to make, one pass over the captions;
- **warm**: the same matcher and the same captions again, the signatures made by the cold pass
  (what a long tagging job runs at once its concepts have been seen).

Then ``--workers`` processes forked from a freshly built matcher (cold) and from the warm one,
each tagging a contiguous slice, against the machine's ceiling measured in the same run (pure
Python work in ``--workers`` processes vs one).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

from engine.graph.concept_graph import GraphConfig, load_graph, prune_graph
from engine.graph.matching import build_matcher
from engine.profiling.openclipart_source import OPENCLIPART_ROOT, openclipart_caption

_MATCHER = None  # set before forking: the workers share it copy-on-write
_CAPTIONS: list[str] = []


def load_captions(graph) -> list[str]:
    """openclipart's captions, then WordNet's glosses and examples: each distinct string once."""
    paths = sorted(Path(OPENCLIPART_ROOT, "svg").rglob("*.svg"))
    if not paths:
        sys.exit(f"no openclipart SVGs under {OPENCLIPART_ROOT}: install openclipart-svg (make setup)")
    captions = []
    for path in paths:
        try:
            captions.append(openclipart_caption(path.read_bytes()))
        except Exception:  # a malformed SVG: skip it, as ingest would reject it
            continue
    for node in sorted(graph.nodes):  # gloss "x; y; \"an example\"": the definition and each example
        for part in (graph.nodes[node].get("gloss") or "").split(";"):
            captions.append(part.strip().strip('"').strip())
    return [c for c in dict.fromkeys(captions) if c]


def tag_slice(bounds: tuple[int, int]) -> tuple[int, float]:
    """Tag captions[start:stop]; returns (tags found, seconds)."""
    start, stop = bounds
    began = time.perf_counter()
    found = 0
    for i in range(start, stop):
        found += len(_MATCHER.match(_CAPTIONS[i]))
    return found, time.perf_counter() - began


def spin(_: int) -> float:
    """A fixed amount of pure-Python work; returns its seconds."""
    began = time.perf_counter()
    total = 0
    for i in range(3_000_000):
        total += i * i % 7
    return time.perf_counter() - began


def machine_ceiling(workers: int) -> float:
    """How much faster ``workers`` processes finish the same per-process work than one (best of 3):
    what the shared machine allows right now."""
    one = min(spin(0) for _ in range(3))
    many = []
    for _ in range(3):
        began = time.perf_counter()
        with mp.get_context("fork").Pool(workers) as pool:
            pool.map(spin, range(workers))
        many.append(time.perf_counter() - began)
    return workers * one / min(many)


def parallel(workers: int) -> tuple[float, int]:
    """(seconds, tags) for ``workers`` forked processes tagging the captions in contiguous slices."""
    chunk = -(-len(_CAPTIONS) // workers)
    slices = [(i, min(i + chunk, len(_CAPTIONS))) for i in range(0, len(_CAPTIONS), chunk)]
    began = time.perf_counter()
    with mp.get_context("fork").Pool(workers) as pool:
        parts = pool.map(tag_slice, slices)
    return time.perf_counter() - began, sum(p[0] for p in parts)


def main() -> int:
    global _MATCHER, _CAPTIONS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=0, help="at most this many captions (0: all)")
    parser.add_argument("--workers", type=int, default=2, help="processes for the parallel runs")
    parser.add_argument("--convert", action="store_true", help="also time scripts/build_wordnet_graph.py")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty", "--abbrev=7"], capture_output=True, text=True
    ).stdout.strip()
    print(f"cpus {os.cpu_count()}  commit {commit}  load average at start {os.getloadavg()}")
    print("command:", " ".join(["python", *sys.argv]))
    results: dict = {"cpus": os.cpu_count(), "commit": commit, "load_start": os.getloadavg()}

    if args.convert:
        from engine.graph.wordnet import read_wordnet

        began = time.perf_counter()
        read_wordnet()
        results["convert_s"] = time.perf_counter() - began
        print(f"WordNet -> tables (parse only, no Parquet write): {results['convert_s']:.1f} s")

    began = time.perf_counter()
    graph = load_graph()
    loaded = time.perf_counter()
    pruned = prune_graph(graph, GraphConfig())
    prune_done = time.perf_counter()
    _MATCHER = build_matcher(graph, pruned.kept)
    built = time.perf_counter()
    results.update(
        graph_load_s=loaded - began,
        graph_prune_s=prune_done - loaded,
        matcher_build_s=built - prune_done,
        concepts=graph.number_of_nodes(),
        kept=len(pruned.kept),
        surface_forms=len(_MATCHER.senses),
    )
    print(
        f"graph: load {results['graph_load_s']:.1f} s ({graph.number_of_nodes()} concepts), "
        f"prune {results['graph_prune_s']:.1f} s (kept {len(pruned.kept)}), "
        f"matcher {results['matcher_build_s']:.1f} s ({len(_MATCHER.senses)} surface forms)"
    )

    _CAPTIONS = load_captions(graph)[: args.n or None]
    n = len(_CAPTIONS)
    words = sum(len(c.split()) for c in _CAPTIONS) / n
    print(f"captions: {n:,} distinct (openclipart titles+keywords, WordNet glosses), {words:.1f} words")
    results.update(captions=n, words_per_caption=words)

    # the cold runs first: forked from a matcher with no signature made yet, then one process
    cold_wall, tags = parallel(args.workers)
    _, cold_s = tag_slice((0, n))
    _, warm_s = tag_slice((0, n))  # the same matcher again: every signature now made
    warm_wall, _ = parallel(args.workers)
    results.update(
        cold_captions_per_s=n / cold_s,
        warm_captions_per_s=n / warm_s,
        workers=args.workers,
        cold_parallel_captions_per_s=n / cold_wall,
        warm_parallel_captions_per_s=n / warm_wall,
        tags_per_caption=tags / n,
    )
    for label in ("cold", "warm"):
        one, many = results[f"{label}_captions_per_s"], results[f"{label}_parallel_captions_per_s"]
        ratio = many / one
        print(f"{label}: 1 process {one:,.0f}/s, {args.workers} processes {many:,.0f}/s ({ratio:.2f}x)")
    results["machine_ceiling"] = machine_ceiling(args.workers)
    results["load_end"] = os.getloadavg()
    ceiling = results["machine_ceiling"]
    print(f"machine ceiling now: {args.workers} pure-Python processes do {ceiling:.2f}x one")
    print(f"load average at end {os.getloadavg()}; target >= 20,000 captions/s on 2 cores")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
