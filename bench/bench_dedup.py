"""Benchmark (2) of issue 3: semantic dedup of 1,000,000 512-d vectors with planted duplicates.

Run by hand (not a test):

    PYTHONPATH=$PWD .venv/bin/python bench/bench_dedup.py --n 1000000 --threads 2

The data: unit vectors around 2,000 "topics" (two unrelated vectors of one topic have cosine
~0.5), of which 5% are originals with 1-9 planted copies each at cosine 0.85-0.995 to their
original (edited copies of unseen images span that range and below: bench/results-dedup-calibration.json),
and 20% of the other vectors have a *sibling*: a different image of the same class at cosine
0.80-0.95 (``HARD_NEGATIVE_RANGE``), which no method should join, so precision can fail. The
pipeline is the one ``engine.vectors.dedup.dedup_workspace`` runs, on arrays instead of Parquet:
IVF-PQ index (``engine.vectors.index``, trained on a sample, added in shards) -> k-NN of every
vector -> exact re-score -> proximity graph -> quality rank -> star communities (bounded
diameter, ``engine.vectors.communities``) -> representatives. There is no pHash pass here.

Reported: wall time per step and in total, peak RSS (resource.getrusage), and pair precision /
recall: a planted pair is two vectors of one planted cluster (original + its copies); a found
pair is two vectors of one community. Targets: <= 10 min, recall and precision >= 0.99, 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import time

import faiss
import numpy as np
import pyarrow as pa

from engine.vectors.dedup import DedupConfig, find_communities, representative_order, semantic_pairs
from engine.vectors.index import IndexConfig, IndexMeta, VectorIndex, add_vectors, create_faiss_index

CHUNK = 100_000  # vectors generated / added per step: one "embeddings shard" worth
COPY_RANGE = (0.85, 0.995)  # cosine of a planted copy to its original: the bulk of the edited
# copies' cosines in bench/results-dedup-calibration.json's images (crops reach lower)
HARD_NEGATIVE_RANGE = (0.80, 0.95)  # cosine of a sibling (same class, different image) to its base
SIBLING_FRACTION = 0.2  # share of the unplanted base vectors that get a sibling


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def near(base: np.ndarray, cosine: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors at (about) the given cosine to each row of ``base``."""
    tau = np.sqrt(1 / cosine**2 - 1)  # |b + tau*g| with g ⟂-ish unit noise: cos = 1/sqrt(1+tau^2)
    noise = unit(rng.standard_normal(base.shape).astype(np.float32))
    return unit(base.astype(np.float32) + tau[:, None] * noise)


def make_data(n: int, dim: int, seed: int, topics: int = 2000, dup_fraction: float = 0.05):
    """(float16 vectors, planted cluster id per row or -1, number of siblings); originals first,
    then the other base vectors (the last of them siblings: hard negatives), copies last."""
    rng = np.random.default_rng(seed)
    centers = unit(rng.standard_normal((topics, dim))).astype(np.float32)
    # copies per original: 1 + geometric, capped at 9 (a few large clusters, mostly pairs)
    n_orig = int(n * dup_fraction)
    n_copies = np.minimum(rng.geometric(0.45, n_orig), 9)
    while n_orig + n_copies.sum() > n * 0.2:  # keep the planted share near 15%
        n_orig = int(n_orig * 0.9)
        n_copies = n_copies[:n_orig]
    total_copies = int(n_copies.sum())
    n_base = n - total_copies
    vectors = np.empty((n, dim), np.float16)
    for start in range(0, n_base, CHUNK):
        m = min(CHUNK, n_base - start)
        topic = rng.integers(0, topics, m)
        noise = rng.standard_normal((m, dim)).astype(np.float32) / np.sqrt(dim)
        vectors[start : start + m] = unit(centers[topic] + noise)  # |noise| ~ 1: cos ~0.5 in-topic
    cluster = np.full(n, -1, np.int64)
    cluster[:n_orig] = np.arange(n_orig)  # originals are the first n_orig base vectors
    n_siblings = int((n_base - n_orig) * SIBLING_FRACTION / (1 + SIBLING_FRACTION))
    sibling_rows = np.arange(n_base - n_siblings, n_base)  # replace the last base vectors
    parents = rng.choice(np.arange(n_orig, n_base - n_siblings), n_siblings, replace=False)
    for start in range(0, n_siblings, CHUNK):
        rows, of = sibling_rows[start : start + CHUNK], parents[start : start + CHUNK]
        vectors[rows] = near(vectors[of], rng.uniform(*HARD_NEGATIVE_RANGE, len(rows)), rng)
    owner = np.repeat(np.arange(n_orig), n_copies)
    for start in range(0, total_copies, CHUNK):
        rows = owner[start : start + CHUNK]
        target = rng.uniform(*COPY_RANGE, len(rows))  # cosine to the original
        vectors[n_base + start : n_base + start + len(rows)] = near(vectors[rows], target, rng)
        cluster[n_base + start : n_base + start + len(rows)] = rows
    return vectors, cluster, n_siblings


def pairs_in(labels: np.ndarray) -> int:
    counts = np.unique(labels, return_counts=True)[1]
    return int((counts * (counts - 1) // 2).sum())


def pair_metrics(labels: np.ndarray, cluster: np.ndarray) -> dict:
    """Pair precision / recall of communities against planted clusters (unplanted rows alone)."""
    truth = np.where(cluster >= 0, cluster, cluster.max() + 1 + np.arange(len(cluster)))
    both = labels.astype(np.int64) * (truth.max() + 1) + truth
    tp, found, planted = pairs_in(both), pairs_in(labels), pairs_in(truth)
    return {
        "planted_pairs": planted,
        "found_pairs": found,
        "true_pairs": tp,
        "recall": tp / max(planted, 1),
        "precision": tp / max(found, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=DedupConfig().threshold)
    parser.add_argument("--k", type=int, default=DedupConfig().k)
    parser.add_argument("--method", default=DedupConfig().method, help="star | louvain")
    parser.add_argument("--nprobe", type=int, default=IndexConfig().nprobe)
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    times, cpu = {}, {}
    clock = [time.perf_counter(), time.process_time()]

    def lap(name: str) -> None:
        """Wall and CPU seconds (all threads) since the previous lap."""
        now = [time.perf_counter(), time.process_time()]
        times[name], cpu[name] = now[0] - clock[0], now[1] - clock[1]
        clock[:] = now
        print(f"{name}: {times[name]:.1f} s wall, {cpu[name]:.1f} s CPU", flush=True)

    vectors, cluster, n_hard = make_data(args.n, args.dim, args.seed)
    lap("generate_s")

    config = IndexConfig(kind="ivfpq", nprobe=args.nprobe, seed=args.seed).resolve(args.n, args.dim)
    index = create_faiss_index(config, args.dim)
    sample = np.random.default_rng(args.seed).choice(args.n, config.train_size, replace=False)
    index.train(vectors[np.sort(sample)].astype(np.float32))
    lap("train_s")
    for s in range(0, args.n, CHUNK):
        add_vectors(index, vectors[s : s + CHUNK], "ivfpq")
    lap("add_s")
    meta = IndexMeta("image", "synthetic", "ivfpq", args.dim, args.n, vars(config))
    vindex = VectorIndex(index, np.arange(args.n).astype(str).astype(object), meta)
    vindex.set_search_params(nprobe=args.nprobe)

    i, j, sim, _, _ = semantic_pairs(vindex, vectors, args.threshold, args.k, args.nprobe)
    lap("knn_graph_s")
    rng = np.random.default_rng(args.seed + 1)
    quality = pa.table(
        {
            "sample_id": pa.array(np.char.zfill(np.arange(args.n).astype(str), 7)),
            "width": rng.integers(256, 2048, args.n),
            "height": rng.integers(256, 2048, args.n),
            "compression_ratio": rng.uniform(2, 30, args.n),
            "blur": rng.uniform(0, 1000, args.n),
        }
    )
    rank = representative_order(quality)
    dedup = DedupConfig(threshold=args.threshold, k=args.k, seed=args.seed, method=args.method)
    labels, split = find_communities(args.n, i, j, sim.astype(np.float64), dedup, rank, vectors)
    lap("communities_s")

    best = np.full(args.n, np.iinfo(np.int64).max)
    np.minimum.at(best, labels, rank)
    representatives = int((rank == best[labels]).sum())
    lap("representatives_s")
    dedup_wall = sum(v for k, v in times.items() if k != "generate_s")
    result = {
        "command": "PYTHONPATH=$PWD .venv/bin/python bench/bench_dedup.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if v is not None and k != "output"),
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} threads (faiss OpenMP)",
        "n": args.n,
        "dim": args.dim,
        "index": {k: vars(config)[k] for k in ("kind", "nlist", "pq_m", "pq_nbits", "nprobe", "train_size")},
        "threshold": args.threshold,
        "k": args.k,
        "planted_clusters": int(cluster.max() + 1),
        "planted_vectors": int((cluster >= 0).sum()),
        "graph_edges": len(i),
        "method": args.method,
        "min_cosine": DedupConfig().min_cosine,
        "copy_range": COPY_RANGE,
        "hard_negative_range": HARD_NEGATIVE_RANGE,
        "hard_negatives": int(n_hard),
        "components_split_by_louvain": split,
        "communities_multi": int((np.bincount(labels) > 1).sum()),
        "representatives": representatives,
        **pair_metrics(labels, cluster),
        "times_s": {k: round(v, 1) for k, v in times.items()},
        "cpu_s": {k: round(v, 1) for k, v in cpu.items()},
        "dedup_wall_s": round(dedup_wall, 1),
        "dedup_cpu_s": round(sum(v for k, v in cpu.items() if k != "generate_s"), 1),
        "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty", "--abbrev=7"], capture_output=True, text=True
    )
    result["commit"] = commit.stdout.strip() or "unknown"
    text = json.dumps(result, indent=1)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
