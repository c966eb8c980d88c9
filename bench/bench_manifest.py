"""Benchmark: building a stage manifest over a 10,000,000-row synthetic pool, ours vs pandas.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_manifest.py                      # 10M rows, lowres
    PYTHONPATH=$PWD .venv/bin/python bench/bench_manifest.py --n 1000000 --json /tmp/m.json
    PYTHONPATH=$PWD .venv/bin/python bench/bench_manifest.py --recipes lowres,omni,sft --skip-pandas

The pool is a workspace written once under --workdir (default $TMPDIR/zcurate-bench-manifest-N):
``samples`` (hex ids, uris, captions; 2% rejected), ``signals`` (every profiling column),
``embeddings`` (clip_score only: the vectors are null, 10M real vectors would be 10 GB),
``safety`` (nsfw_score), ``dedup`` (5% of samples in near-duplicate communities) and ``tags``
(1-5 concepts per sample drawn Zipf-like from 20,000 real WordNet nouns, so a few concepts are very
frequent and most are rare, as in real captions), plus the concept tables for those nouns. Shards of
250,000 rows, zstd, as the curate job writes them.

Each implementation runs in its own process (so peak RSS is its own, read from
``resource.getrusage(RUSAGE_CHILDREN)``): **ours** is ``engine.curation.manifest.build_manifest`` with the
shipped recipe (``--force``: no cached file); **pandas** is a straightforward pandas implementation
of the same lowres recipe (read the tables, merge on sample_id, filter, rank tilts, MetaCLIP
balancing through groupby, normalise, write Parquet). The two outputs are compared row by row
(same samples, weights within 1e-9 relative), so the baseline does the same work.
"""

from __future__ import annotations

import argparse
import binascii
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

SHARD_ROWS = 250_000
N_CONCEPTS = 20_000


# --- the synthetic pool ----------------------------------------------------------------------------


def hex_ids(rng: np.random.Generator, n: int) -> pa.Array:
    """n random 32-character lowercase hex ids (like blake2b digests), built without a Python loop."""
    data = binascii.hexlify(rng.bytes(16 * n))
    offsets = np.arange(0, 32 * n + 1, 32, dtype=np.int64)
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data)).cast(pa.string())


def concept_tables(rng: np.random.Generator):
    """20,000 real WordNet nouns (with their ancestors) and the concepts/ancestors tables."""
    from engine import schema
    from engine.graph.concept_graph import ancestor_distances, load_graph

    graph = load_graph()
    nouns = np.array(sorted(n for n in graph.nodes if graph.nodes[n].get("depth", 0) >= 4), dtype=np.int64)
    chosen = np.sort(rng.choice(nouns, size=min(N_CONCEPTS, len(nouns)), replace=False))
    ancestors = ancestor_distances(graph, chosen.tolist())
    rows = [(c, a, d) for c in chosen.tolist() for a, d in ancestors.get(c, {c: 0}).items()]
    anc = pa.table(
        {
            "concept_id": pa.array([r[0] for r in rows], pa.int64()),
            "ancestor_id": pa.array([r[1] for r in rows], pa.int64()),
            "distance": pa.array([r[2] for r in rows], pa.int16()),
        }
    )
    ids = sorted({r[1] for r in rows})
    concepts = pa.Table.from_pylist(
        [
            {
                "concept_id": c,
                "synset": graph.nodes[c]["synset"],
                "lemmas": graph.nodes[c]["lemmas"],
                "gloss": graph.nodes[c].get("gloss"),
                "depth": graph.nodes[c].get("depth"),
                "source": "wordnet",
                "lexname": graph.nodes[c].get("lexname"),
                "pagerank": 1.0,
            }
            for c in ids
        ],
        schema=schema.CONCEPTS,
    )
    known = set(ids)
    edges = pa.Table.from_pylist(
        [
            {"parent_id": p, "child_id": c, "kind": k}
            for p, c, k in graph.edges(data="kind")
            if c in known and p in known
        ],
        schema=schema.CONCEPT_EDGES,
    )
    names = [graph.nodes[c]["lemmas"][0].replace("_", " ") for c in chosen.tolist()]
    return chosen, names, concepts, edges, anc.cast(schema.CONCEPT_ANCESTORS)


def write_pool(root: str, n: int, seed: int = 0) -> None:
    """Write the synthetic workspace (skipped when a complete one is there)."""
    from engine import schema
    from engine.workspace import Workspace

    marker = os.path.join(root, "_bench_complete.json")
    if os.path.exists(marker):
        return
    ws = Workspace(root)
    rng = np.random.default_rng(seed)
    concept_ids, names, concepts, edges, ancestors = concept_tables(rng)
    ws.write_shard("concepts", schema.GRAPH_SHARD, concepts)
    ws.write_shard("concept_edges", schema.GRAPH_SHARD, edges)
    ws.write_shard("concept_ancestors", schema.GRAPH_SHARD, ancestors)
    # Zipf-like concept popularity: p(rank r) ~ 1 / (r + 10)
    popularity = 1.0 / (np.arange(len(concept_ids)) + 10.0)
    popularity /= popularity.sum()
    name_array = pa.array(names, pa.string())
    began = time.perf_counter()
    for shard, start in enumerate(range(0, n, SHARD_ROWS)):
        m = min(SHARD_ROWS, n - start)
        shard_id = f"bench-{shard:05d}"
        sample_id = hex_ids(rng, m)
        image_id = hex_ids(rng, m)
        rejected = rng.random(m) < 0.02
        k = rng.integers(1, 6, size=m)  # concepts per sample
        pair_concept = rng.choice(len(concept_ids), size=int(k.sum()), p=popularity)
        first_concept = pair_concept[np.r_[0, np.cumsum(k)[:-1]]]
        caption = pc.binary_join_element_wise("a picture of a ", name_array.take(pa.array(first_concept)), "")
        uri = pc.binary_join_element_wise("/data/images/", sample_id, ".jpg", "")
        status = np.where(rejected, schema.STATUS_REJECTED, schema.STATUS_OK)
        samples = pa.table(
            {
                "sample_id": sample_id,
                "image_id": image_id,
                "source": pa.array(["/data/images"] * m),
                "source_kind": pa.array(["folder"] * m),
                "shard_id": pa.array([shard_id] * m),
                "row_index": pa.array(np.arange(m, dtype=np.int32)),
                "ref": uri,
                "uri": uri,
                "caption": caption,
                "status": pa.array(status),
                "reject_reason": pa.array(np.where(rejected, "corrupt_image", None)),
                "reject_detail": pa.nulls(m, pa.string()),
                "warnings": pa.array([[]] * m, pa.list_(pa.string())),
            }
        )
        ws.write_shard("samples", shard_id, samples)
        ok = ~rejected
        ids, imgs, mo = sample_id.filter(pa.array(ok)), image_id.filter(pa.array(ok)), int(ok.sum())
        width = rng.integers(48, 2048, size=mo).astype(np.int32)
        height = (width / rng.uniform(0.4, 2.5, size=mo)).clip(32, 4096).astype(np.int32)
        signals = {
            "sample_id": ids,
            "image_id": imgs,
            "width": width,
            "height": height,
            "aspect": (width / height).astype(np.float32),
            "image_format": pa.array(["JPEG"] * mo),
            "image_mode": pa.array(["RGB"] * mo),
            "bits_per_pixel": np.full(mo, 24, np.int16),
            "file_bytes": rng.integers(5_000, 2_000_000, size=mo),
            "phash": pa.array(rng.integers(0, 2**63, size=mo).astype(np.uint64)),
            "compression_ratio": rng.lognormal(2.0, 0.5, size=mo).astype(np.float32),
            "border_variance": rng.gamma(2.0, 300.0, size=mo).astype(np.float32),
            "jpeg_bpp": rng.uniform(0.5, 4.0, size=mo).astype(np.float32),
            "blur": rng.gamma(2.0, 200.0, size=mo).astype(np.float32),
            "colourfulness": rng.uniform(0, 120, size=mo).astype(np.float32),
            "entropy": rng.uniform(2.0, 8.0, size=mo).astype(np.float32),
            "caption_chars": pc.utf8_length(caption.filter(pa.array(ok))).cast(pa.int32()),
            "caption_words": np.full(mo, 4, np.int32),
            "caption_lang": pa.array(["en"] * mo),
            "caption_lang_prob": np.ones(mo, np.float32),
            "caption_has_cjk": np.zeros(mo, bool),
        }
        ws.write_shard("signals", shard_id, pa.table(signals))
        embeddings = pa.table(
            {
                "sample_id": ids,
                "image_id": imgs,
                "model_id": pa.array(["synthetic"] * mo),
                "image_vec": pa.nulls(mo, pa.list_(pa.float16(), schema.EMBED_DIM)),
                "text_vec": pa.nulls(mo, pa.list_(pa.float16(), schema.EMBED_DIM)),
                "clip_score": rng.normal(0.3, 0.08, size=mo).astype(np.float32),
            }
        )
        ws.write_shard("embeddings", shard_id, embeddings)
        nsfw = rng.beta(0.5, 8.0, size=mo).astype(np.float32)
        ws.write_shard("safety", shard_id, pa.table({"sample_id": ids, "image_id": imgs, "nsfw_score": nsfw}))
        # tags: the pairs of usable samples (a sample's concepts are distinct, as tagging writes them)
        pair_sample = np.repeat(np.arange(m), k)
        keep = ok[pair_sample]
        tags = pa.table(
            {
                "sample_id": sample_id.take(pa.array(pair_sample[keep])),
                "concept_id": pa.array(concept_ids[pair_concept[keep]]),
                "source": pa.array(["caption"] * int(keep.sum())),
                "score": rng.uniform(0.3, 1.0, size=int(keep.sum())).astype(np.float32),
                "hits": np.ones(int(keep.sum()), np.int16),
                "span": pa.nulls(int(keep.sum()), pa.string()),
            }
        )
        tags = pa.Table.from_pandas(
            tags.to_pandas().drop_duplicates(["sample_id", "concept_id"]), preserve_index=False
        )
        ws.write_shard("tags", shard_id, tags)
        print(
            f"  shard {shard_id}: {m} rows ({time.perf_counter() - began:.0f} s)", file=sys.stderr, flush=True
        )
    # dedup: one global shard; 5% of usable samples join a community of 3 (its id: the representative)
    ok_ids = pc.drop_null(
        pa.chunked_array(
            [
                pq.read_table(f, columns=["sample_id", "status"]).filter(pc.equal(pc.field("status"), "ok"))[
                    "sample_id"
                ]
                for f in ws.shard_files("samples")
            ]
        ).combine_chunks()
    )
    n_ok = len(ok_ids)
    community_of = np.arange(n_ok)
    members = rng.choice(n_ok, size=n_ok // 20, replace=False)
    reps = rng.choice(np.setdiff1d(np.arange(n_ok), members), size=len(members) // 2, replace=False)
    community_of[members] = np.repeat(reps, 2)[: len(members)]
    community = ok_ids.take(pa.array(community_of))
    dedup = pa.table(
        {
            "sample_id": ok_ids,
            "community_id": community,
            "is_representative": pa.array(community_of == np.arange(n_ok)),
            "nearest_id": pa.nulls(n_ok, pa.string()),
            "nearest_sim": pa.nulls(n_ok, pa.float32()),
        }
    )
    ws.write_shard("dedup", "all", dedup)
    with open(marker, "w") as f:
        json.dump({"n": n, "seed": seed}, f)


# --- the two implementations -------------------------------------------------------------------------


def run_ours(root: str, recipe_name: str, out_path: str) -> dict:
    from engine.catalog import refresh_catalog
    from engine.curation.manifest import build_manifest
    from engine.curation.recipe import load_recipe
    from engine.workspace import Workspace

    ws = Workspace(root)
    refresh_catalog(ws)
    began = time.perf_counter()
    result = build_manifest(ws, load_recipe(recipe_name), seed=0, force=True)
    seconds = time.perf_counter() - began
    os.replace(result.path, out_path)
    return {"seconds": seconds, "rows": result.sidecar["counts"]["rows"], "manifest_id": result.manifest_id}


def run_pandas(root: str, out_path: str) -> dict:
    """The lowres recipe, written the straightforward pandas way."""
    import glob

    import pandas as pd

    from engine.curation.recipe import load_recipe

    recipe = load_recipe("lowres")
    began = time.perf_counter()

    def read(table: str, columns: list[str]) -> pd.DataFrame:
        files = sorted(glob.glob(os.path.join(root, table, "*.parquet")))
        return pd.concat([pd.read_parquet(f, columns=columns) for f in files], ignore_index=True)

    samples = read("samples", ["sample_id", "uri", "caption", "status"])
    samples = samples[samples["status"] == "ok"].drop(columns="status")
    signals = read("signals", ["sample_id", "width", "height", "entropy", "compression_ratio"])
    df = samples.merge(signals, on="sample_id")
    df = df.merge(read("embeddings", ["sample_id", "clip_score"]), on="sample_id", how="left")
    df = df.merge(read("safety", ["sample_id", "nsfw_score"]), on="sample_id", how="left")
    df = df.merge(read("dedup", ["sample_id", "is_representative"]), on="sample_id", how="left")
    df["min_side"] = np.minimum(df["width"], df["height"])
    # (merges keep the samples' order, which is the engine's pool order: shards, then rows)
    # hard filters (nulls kept), then representatives only
    keep = pd.Series(True, index=df.index)
    for f in recipe.filters:
        values = df[f.column].astype("float64")
        low = f.min
        if f.min_quantile is not None:
            q = values.quantile(f.min_quantile)
            low = q if low is None else max(low, q)
        ok = pd.Series(True, index=df.index)
        if low is not None:
            ok &= values >= low
        if f.max is not None:
            ok &= values <= f.max
        keep &= ok | values.isna()
    df = df[keep].reset_index(drop=True)
    # soft tilts: exp(strength * (percentile rank - 0.5)), ranked over the filtered pool
    weight = pd.Series(1.0, index=df.index)
    for t in recipe.tilts:
        values = df[t.column].astype("float64")
        rank = (values.rank(method="average") - 1) / max(values.notna().sum() - 1, 1)
        weight *= np.exp(t.strength * (rank.fillna(0.5) - 0.5))
    representative = df["is_representative"].fillna(True).astype(bool)
    df, weight = df[representative].reset_index(drop=True), weight[representative].reset_index(drop=True)
    # MetaCLIP balancing: p = max over a sample's concepts of min(1, t / n_c)
    tags = read("tags", ["sample_id", "concept_id", "source", "score"])
    tags = tags[tags["source"].isin(recipe.concepts.sources) & (tags["score"] >= recipe.concepts.min_score)]
    tags = tags[tags["sample_id"].isin(df["sample_id"])].drop_duplicates(["sample_id", "concept_id"])
    n_c = tags.groupby("concept_id")["sample_id"].transform("size")
    tags = tags.assign(p=np.minimum(1.0, recipe.balance.threshold / n_c))
    p = tags.groupby("sample_id")["p"].max()
    weight *= df["sample_id"].map(p).fillna(recipe.balance.untagged).to_numpy()
    df["weight"] = weight / weight.mean()
    concepts = tags.groupby("sample_id")["concept_id"].apply(sorted)
    df["concept_ids"] = df["sample_id"].map(concepts)
    df["bucket_h"], df["bucket_w"] = 256, 256
    df["stage"] = "lowres"
    out = df[["sample_id", "uri", "caption", "weight", "bucket_h", "bucket_w", "stage", "concept_ids"]]
    out.to_parquet(out_path, index=False)
    return {"seconds": time.perf_counter() - began, "rows": len(out)}


def child(args) -> None:
    if args.impl == "pandas":
        result = run_pandas(args.workdir, args.out)
    else:
        result = run_ours(args.workdir, args.impl.split(":", 1)[1], args.out)
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps(result))


def run_child(workdir: str, impl: str, out: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    cmd = [sys.executable, __file__, "--child", impl, "--workdir", workdir, "--out", out]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{impl} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(ours_path: str, pandas_path: str) -> dict:
    ours = pq.read_table(ours_path, columns=["sample_id", "weight"])
    theirs = pq.read_table(pandas_path, columns=["sample_id", "weight"])
    # (pandas writes large_string: compare the values, not the types)
    same_rows = (
        ours["sample_id"]
        .cast(pa.string())
        .combine_chunks()
        .equals(theirs["sample_id"].cast(pa.string()).combine_chunks())
    )
    a, b = ours["weight"].to_numpy(), theirs["weight"].to_numpy()
    rel = float(np.max(np.abs(a - b) / b)) if same_rows and len(a) else None
    return {"same_rows": same_rows, "max_rel_weight_diff": rel}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10_000_000, help="pool rows (samples)")
    parser.add_argument("--workdir", help="where the synthetic workspace lives (kept between runs)")
    parser.add_argument("--recipes", default="lowres", help="comma-separated recipes to time (ours)")
    parser.add_argument("--skip-pandas", action="store_true")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--child", dest="impl", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.impl:
        child(args)
        return
    workdir = args.workdir or os.path.join(tempfile.gettempdir(), f"zcurate-bench-manifest-{args.n}")
    began = time.perf_counter()
    write_pool(workdir, args.n)
    generated = time.perf_counter() - began
    outputs = tempfile.mkdtemp(prefix="zcurate-bench-out-")
    results = {"n": args.n, "workdir": workdir, "generate_s": round(generated, 1), "cpus": os.cpu_count()}
    for name in args.recipes.split(","):
        out = os.path.join(outputs, f"ours-{name}.parquet")
        results[f"ours_{name}"] = run_child(workdir, f"ours:{name}", out)
        print(f"ours {name}: {results[f'ours_{name}']}", flush=True)
    if not args.skip_pandas:
        out = os.path.join(outputs, "pandas-lowres.parquet")
        results["pandas_lowres"] = run_child(workdir, "pandas", out)
        print(f"pandas lowres: {results['pandas_lowres']}", flush=True)
        if "ours_lowres" in results:
            results["agreement"] = compare(os.path.join(outputs, "ours-lowres.parquet"), out)
            results["speedup_vs_pandas"] = round(
                results["pandas_lowres"]["seconds"] / results["ours_lowres"]["seconds"], 2
            )
            print(f"agreement: {results['agreement']}  speed-up vs pandas: {results['speedup_vs_pandas']}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
