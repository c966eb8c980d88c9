"""Benchmark (3) of issue 3: search latency at 1,000,000 512-d vectors, per index type.

Run by hand (not a test):

    PYTHONPATH=$PWD .venv/bin/python bench/bench_search.py --n 1000000 --threads 2

The vectors are bench_dedup.py's (topic structure plus planted copies). Queries are database
vectors moved to cosine ~0.8 (a caption-like query near, not on, its images). Each query is
one ``VectorIndex.search`` call of one vector, k=10, as the API serves it; p50/p99 are over the
single-query wall times. recall@10 is against the exact (flat) index's answers. Index build
time is reported too (the IVF-PQ build includes its training; HNSW is built with every thread
here, unlike ``engine.vectors.index``'s single-threaded deterministic build).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import time

import faiss
import numpy as np

from bench.bench_dedup import CHUNK, make_data, unit
from engine.vectors.index import IndexConfig, IndexMeta, VectorIndex, create_faiss_index


def build(kind: str, vectors: np.ndarray, args) -> tuple[VectorIndex, float]:
    n, dim = vectors.shape
    config = IndexConfig(kind=kind, nprobe=args.nprobe, ef_search=args.ef_search, seed=args.seed)
    config = config.resolve(n, dim)
    start = time.perf_counter()
    index = create_faiss_index(config, dim)
    if not index.is_trained:
        sample = np.random.default_rng(args.seed).choice(n, config.train_size, replace=False)
        index.train(vectors[np.sort(sample)].astype(np.float32))
    for s in range(0, n, CHUNK):
        index.add(vectors[s : s + CHUNK].astype(np.float32))
    seconds = time.perf_counter() - start
    vindex = VectorIndex(
        index, np.arange(n).astype(str).astype(object), IndexMeta("image", "x", kind, dim, n, vars(config))
    )
    vindex.set_search_params()
    return vindex, seconds


def latencies(vindex: VectorIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    times, ids = [], []
    for q in queries:
        start = time.perf_counter()
        _, found = vindex.search(q[None, :], k)
        times.append(time.perf_counter() - start)
        ids.append(found[0])
    return np.array(times) * 1000, np.array(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--kinds", default="flat,ivfpq,hnsw")
    parser.add_argument("--nprobe", type=int, default=IndexConfig().nprobe)
    parser.add_argument("--ef-search", type=int, default=IndexConfig().ef_search)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    vectors, _ = make_data(args.n, args.dim, args.seed)
    rng = np.random.default_rng(args.seed + 7)
    base = vectors[rng.choice(args.n, args.queries, replace=False)].astype(np.float32)
    noise = unit(rng.standard_normal(base.shape).astype(np.float32))
    queries = unit(base + 0.75 * noise).astype(np.float32)  # cosine ~0.8 to the vector it came from
    results, truth = {}, None
    for kind in args.kinds.split(","):
        vindex, build_s = build(kind, vectors, args)
        ms, ids = latencies(vindex, queries, args.k)
        if kind == "flat":
            truth = ids
        recall = None
        if truth is not None:
            recall = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(ids, truth, strict=True)]))
        results[kind] = {
            "build_s": round(build_s, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "mean_ms": round(float(ms.mean()), 2),
            "recall_at_10_vs_flat": None if recall is None else round(recall, 4),
            "params": {k: vindex.meta.params[k] for k in ("nlist", "pq_m", "nprobe", "hnsw_m", "ef_search")},
        }
        print(kind, results[kind], flush=True)
        if args.output:  # partial results survive a long run being stopped
            with open(args.output, "w") as f:
                json.dump(results, f, indent=1)
        del vindex
        gc.collect()
    result = {
        "command": f"PYTHONPATH=$PWD .venv/bin/python bench/bench_search.py --n {args.n} --queries "
        f"{args.queries} --kinds {args.kinds} --threads {args.threads}",
        "n": args.n,
        "dim": args.dim,
        "k": args.k,
        "queries": args.queries,
        "threads": args.threads,
        "results": results,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
