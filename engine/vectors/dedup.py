"""Near-duplicate removal the Z-Image way (paper section 2.2): k-NN graph + communities.

1. **Edges.** Semantic: every image vector searches the image index for its ``k`` nearest
   neighbours with exact cosines (an IVF-PQ index lends its cells, not its lossy codes: see
   ``_cell_join``; the index may be approximate, the threshold is not); a pair is kept when the
   cosine is >= ``threshold``, or >= ``confirm_threshold`` with pHashes within ``confirm_distance``
   bits (``phash_pairs.confirmed``: the embedding for semantic edits, the hash to confirm a
   lower cosine). Exact: pairs whose 64-bit pHash (``signals.phash``) differ in at most
   ``phash_distance`` bits, found by multi-index hashing (split the hash into d+1 blocks; two
   hashes within d bits agree on at least one block, so only same-block pairs are compared).
2. **Communities.** The ``star`` rule of ``engine.vectors.communities`` (default): centres by
   degree, members one edge from their centre and at cosine >= ``min_cosine`` from every other
   member, so a community's diameter is bounded and unrelated images do not chain through
   intermediates. ``louvain`` / ``leiden``: connected components, large sparse ones split by
   modularity (the earlier rule).
3. **Representatives.** One per community, by the quality rule of ``representative_order``.

Result: table ``dedup`` (one row per usable sample): community_id (the representative's
sample_id), is_representative, nearest_id / nearest_sim (its most similar other image, exact
cosine). Keeping ``is_representative`` rows removes the duplicates; a recipe decides.

The defaults come from ``scripts/calibrate_dedup.py`` on edited copies of icons and wallpapers the
embedder never saw (bench/results-dedup-calibration.json; docs/engines/vectors.md, "Dedup").
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from engine.vectors.communities import METHODS, modularity_communities, star_communities
from engine.vectors.faiss_gpu import to_device
from engine.vectors.index import (
    VectorIndex,
    VectorIndexError,
    embeddings_table,
    load_index,
    vectors_from_column,
)
from engine.vectors.knn_graph import neighbour_lists
from engine.vectors.phash_pairs import confirmed, phash_pairs
from engine.workspace import Workspace

SEARCH_STEP = 1 << 14  # vectors per k-NN / add step: a 32 MiB float32 copy of 512-d vectors


@dataclass
class DedupConfig:
    """Thresholds and knobs of ``dedup_workspace``; see the module docstring for the method."""

    # Calibrated defaults: scripts/calibrate_dedup.py, bench/results-dedup-calibration.json
    # (docs/engines/vectors.md, "Dedup"); rerun it for another embedder.
    # The best F1 there (precision 0.840, recall 0.847): no setting reached precision 0.95 with a
    # usable recall on that set (the default embedder ranks icons of one theme close together).
    threshold: float = 0.84  # image cosine at or above which two images are near-duplicates
    phash_distance: int = 2  # pHash Hamming distance at or below which two images are duplicates;
    # -1 turns the pHash pass off
    confirm_threshold: float = 0.80  # a pair at or above this cosine whose pHashes are within
    confirm_distance: int = -1  # ... this many bits is a near-duplicate too (-1: rule off; the
    # calibration with the current heads chose it off)
    min_cosine: float = 0.50  # star rule: the least cosine between any two members of a community
    # (its diameter bound: look-alikes of a copy do not join through it)
    k: int = 16  # neighbours per image: a near-duplicate cluster larger than k is still joined
    # through chains of neighbours, and 16 keeps the 1M-vector search within budget (bench)
    nprobe: int | None = 8  # IVF cells joined with each cell; None: the index's own nprobe.
    # 8 found every planted pair of 1M vectors (bench/bench_dedup.py)
    method: str = "star"  # star (bounded diameter, engine.vectors.communities) | louvain (networkx) |
    # leiden (needs a networkx backend such as cugraph): components split by modularity, may chain
    resolution: float = 1.0  # louvain/leiden: modularity resolution: > 1 gives smaller communities
    louvain_min_size: int = 32  # louvain/leiden: components at least this large and sparser than
    dense: float = 0.5  # ... `dense` (edge density < 0.5) are split; smaller ones stay whole
    seed: int = 0
    device: str = "cpu"  # cpu | cuda:N: where the k-NN search of a flat index runs (engine.vectors.faiss_gpu;
    # an IVF index's cell join stays on the CPU). Same pairs on both: flat search is exact


@dataclass
class DedupSummary:
    samples: int
    communities: int  # with more than one member
    duplicates: int  # samples that are not representatives
    semantic_pairs: int
    phash_pairs: int
    components_split: int  # components handed to Louvain/Leiden
    searched: int = 0  # images whose neighbours were searched (the others kept their stored lists)


# --- edges ------------------------------------------------------------------------------------


def cell_of_each_vector(ivf: faiss.IndexIVF) -> np.ndarray:
    """The IVF cell (inverted list) of every FAISS id, read from the inverted lists."""
    cell = np.empty(ivf.ntotal, np.int64)
    for list_no in range(ivf.nlist):
        size = ivf.invlists.list_size(list_no)
        if size:
            cell[faiss.rev_swig_ptr(ivf.invlists.get_ids(list_no), size)] = list_no
    return cell


def semantic_pairs(
    index: VectorIndex,
    vectors: np.ndarray,
    threshold: float,
    k: int,
    nprobe: int | None = None,
    device: str = "cpu",
    lists: tuple[np.ndarray, np.ndarray] | None = None,
    tie: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The k nearest neighbours of every row of ``vectors`` (row r = FAISS id r), exact cosines.

    Returns (i, j, sim) with i < j and sim >= threshold (each row keeps at most its k best),
    unique pairs sorted by (i, j), and per row its nearest other row and that cosine (-1 and NaN
    when it has none). ``lists``: every row's search result (FAISS ids, cosines) of a flat index,
    already known (``engine.vectors.knn_graph``), so nothing is searched. ``tie``: a rank per FAISS
    id (by sample id) that decides between equally near neighbours (default: the smaller FAISS id),
    so a workspace grown source by source, whose FAISS ids come in another order, picks the same.
    """
    n = len(vectors)
    nearest = np.full(n, -1, np.int64)
    nearest_sim = np.full(n, np.nan, np.float32)
    if n < 2:
        return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), nearest, nearest_sim)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # once: float16 -> 32 is slow per block
    ivf = faiss.try_extract_index_ivf(index.index)
    if ivf is not None:
        blocks = _cell_join(ivf, vectors, threshold, k, nprobe or ivf.nprobe, nearest, nearest_sim)
    else:
        searcher = to_device(index.index, device)
        blocks = _index_knn(searcher, vectors, threshold, k, nearest, nearest_sim, lists, tie)
    keys, sims = [np.zeros(0, np.int64)], [np.zeros(0, np.float32)]
    for rows, cols, sim in blocks:
        a, b = np.minimum(rows, cols), np.maximum(rows, cols)
        keys.append(a * n + b)
        sims.append(sim)
    key, first = np.unique(np.concatenate(keys), return_index=True)
    return key // n, key % n, np.concatenate(sims)[first], nearest, nearest_sim


def _index_knn(index: faiss.Index, vectors, threshold, k, nearest, nearest_sim, lists=None, tie=None):
    """Flat and HNSW indexes hold the vectors: their k-NN similarities are exact already."""
    kk = min(k + 1, len(vectors))  # + 1: a vector finds itself
    for start in range(0, len(vectors), SEARCH_STEP):
        if lists is not None:
            ids, sim = lists[0][start : start + SEARCH_STEP], lists[1][start : start + SEARCH_STEP]
        else:
            query = np.ascontiguousarray(vectors[start : start + SEARCH_STEP], dtype=np.float32)
            sim, ids = index.search(query, kk)
        rows = np.repeat(np.arange(start, start + len(ids)), kk)
        cols, sim = ids.reshape(-1), sim.reshape(-1)
        keep = (cols >= 0) & (cols != rows)
        rows, cols, sim = rows[keep], cols[keep], sim[keep]
        order = np.lexsort((cols if tie is None else tie[cols], -sim, rows))  # per row, best first
        first = np.ones(len(order), bool)
        first[1:] = rows[order][1:] != rows[order][:-1]
        best = order[first]
        nearest[rows[best]], nearest_sim[rows[best]] = cols[best], sim[best]
        hit = sim >= threshold
        yield rows[hit], cols[hit], sim[hit]


def _cell_join(ivf: faiss.IndexIVF, vectors, threshold, k, nprobe, nearest, nearest_sim):
    """k-NN join over the index's IVF cells, with exact cosines from the stored vectors.

    An IVF-PQ index keeps 64-byte codes whose inner products are off by up to ~0.2 on 512-d,
    too coarse for a threshold, so the cells are used and the codes are not: the members of
    each cell are compared with the members of the ``nprobe`` cells nearest its centroid (itself
    included) in one matrix product. That is the candidate set an IVF search of the cell's
    centroid visits, and a BLAS product is ~10x faster than scanning the lists query by query.
    """
    cell = cell_of_each_vector(ivf)
    order = np.argsort(cell, kind="stable")
    bounds = np.searchsorted(cell[order], np.arange(ivf.nlist + 1))
    centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)
    _, near_cells = ivf.quantizer.search(centroids, min(int(nprobe), ivf.nlist))
    for c in range(ivf.nlist):
        rows = order[bounds[c] : bounds[c + 1]]
        if len(rows) == 0:
            continue
        cand = np.concatenate([order[bounds[j] : bounds[j + 1]] for j in near_cells[c] if j >= 0])
        sim = vectors[rows] @ vectors[cand].T  # (m, M) exact cosines
        sim[rows[:, None] == cand[None, :]] = -np.inf  # a vector is not its own neighbour
        if sim.shape[1] == 0:
            continue
        best = np.argmax(sim, axis=1)
        top = sim[np.arange(len(rows)), best]
        has = np.isfinite(top)
        nearest[rows[has]], nearest_sim[rows[has]] = cand[best[has]], top[has]
        if sim.shape[1] > k:  # keep each row's k best, as a k-NN graph does
            kth = -np.partition(-sim, k - 1, axis=1)[:, k - 1 : k]
            sim[sim < kth] = -np.inf
        r, j = np.nonzero(sim >= threshold)
        yield rows[r], cand[j], sim[r, j]


# --- communities ------------------------------------------------------------------------------


def find_communities(
    n: int,
    i: np.ndarray,
    j: np.ndarray,
    weight: np.ndarray,
    config: DedupConfig,
    rank: np.ndarray | None = None,
    vectors: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """Community label per node (labels are the smallest node of each community) and the number
    of components split by Louvain/Leiden (0 for ``star``; ``engine.vectors.communities``).

    ``rank``: quality rank per node for ``star``'s tie-break (None: node order); ``vectors``: the
    nodes' unit vectors for its diameter bound (None: no bound, as for pHash-only edges).
    """
    if config.method not in METHODS:
        raise ValueError(f"unknown community method {config.method!r}; choose star, louvain or leiden")
    if n == 0:
        return np.zeros(0, np.int64), 0
    if config.method == "star":
        rank = np.arange(n) if rank is None else rank
        return star_communities(n, i, j, weight, rank, vectors, config.min_cosine), 0
    return modularity_communities(n, i, j, weight, config.method, config)


def representative_order(quality: pa.Table) -> np.ndarray:
    """Rank of each row under the quality rule (0 = best); the representative is a community's best.

    The rule, in order: more pixels (width x height: a resized or cropped copy loses); higher
    clip_score rounded to 0.01 when present (the caption that matches its image best); lower
    compression_ratio (a re-encoded copy loses); higher blur, i.e. the variance of the Laplacian
    (sharper); then the smaller sample_id, so ties are broken the same way every run.
    """

    def column(name: str, fill: float) -> np.ndarray:
        if name not in quality.column_names:
            return np.full(quality.num_rows, fill)
        return np.nan_to_num(pc.fill_null(quality[name].cast(pa.float64()), fill).to_numpy(), nan=fill)

    pixels = column("width", 0.0) * column("height", 0.0)
    clip = np.round(column("clip_score", -1.0), 2)
    compression = column("compression_ratio", np.inf)
    blur = column("blur", 0.0)
    sample_rank = np.argsort(np.argsort(np.asarray(quality["sample_id"].to_pylist(), dtype=object)))
    order = np.lexsort((sample_rank, -blur, compression, -clip, -pixels))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return rank


# --- the workspace step -----------------------------------------------------------------------


def load_image_vectors(
    ws: Workspace, vindex: VectorIndex, model: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The image vectors in FAISS id order (float16) and their clip_score (NaN when absent)."""
    parts, scores, ids = [], [], []
    for shard in vindex.meta.shards:
        path = ws.shard_path(embeddings_table(model), shard)
        names = pq.ParquetFile(path, filesystem=ws.fs).schema_arrow.names
        columns = ["sample_id", "image_vec"] + (["clip_score"] if "clip_score" in names else [])
        table = pq.read_table(path, columns=columns, filesystem=ws.fs)
        valid, vectors = vectors_from_column(table["image_vec"])
        table = table.filter(pa.array(valid))
        parts.append(vectors.astype(np.float16))
        ids.extend(table["sample_id"].to_pylist())
        score = table["clip_score"] if "clip_score" in names else pa.nulls(table.num_rows, pa.float64())
        scores.append(pc.fill_null(score.cast(pa.float64()), np.nan).to_numpy())
    vectors = np.concatenate(parts) if parts else np.zeros((0, vindex.meta.dim), np.float16)
    scores = np.concatenate(scores) if scores else np.zeros(0)
    if ids != list(vindex.ids):  # shards added at different times: put the rows in FAISS id order
        row_of = {sample_id: row for row, sample_id in enumerate(ids)}
        order = np.array([row_of.get(sample_id, -1) for sample_id in vindex.ids], np.int64)
        if len(ids) != len(vindex.ids) or (order < 0).any():
            raise VectorIndexError("the image index is out of date: run 'zcurate index' first")
        vectors, scores = vectors[order], scores[order]
    return vectors, scores


def edge_threshold(config: DedupConfig) -> float:
    """The least cosine a semantic pair needs before ``phash_pairs.confirmed`` decides."""
    return (
        min(config.threshold, config.confirm_threshold) if config.confirm_distance >= 0 else config.threshold
    )


def semantic_edges(ws: Workspace, config: DedupConfig, model: str | None, row_of: dict, n: int):
    """The image index's edges over signals rows (i, j, cosine), each row's nearest other image and
    its cosine, clip_score per row, how many images were searched (the rest kept stored lists) and
    the image vector per row (NaN where a row has none; None without an index)."""
    nearest_id: list[str | None] = [None] * n
    nearest_sim = np.full(n, np.nan, np.float32)
    clip = np.full(n, np.nan)
    none = np.zeros(0, np.int64)
    try:
        vindex = load_index(ws, "image", model=model)
    except VectorIndexError:
        vindex = None
    if vindex is None or not n:
        return none, none, np.zeros(0), nearest_id, nearest_sim, clip, 0, None
    vectors, scores = load_image_vectors(ws, vindex, model)
    rows = np.array([row_of.get(s, -1) for s in vindex.ids], np.int64)  # FAISS id -> signals row
    lists, searched = None, len(vectors)
    if vindex.meta.kind == "flat":  # exact: keep the lists, search only what changed
        searcher = to_device(vindex.index, config.device)
        found, sims, searched = neighbour_lists(ws, searcher, vindex.ids, vectors, config.k, model)
        lists = (found, sims)
    tie = np.argsort(np.argsort(np.asarray([str(s) for s in vindex.ids]), kind="stable"))  # sample-id rank
    a, b, sim, near, near_sim = semantic_pairs(
        vindex, vectors, edge_threshold(config), config.k, config.nprobe, config.device, lists, tie
    )
    keep = (rows[a] >= 0) & (rows[b] >= 0)  # a sample dropped since indexing has no row
    row_vectors = np.full((n, vectors.shape[1]), np.nan, np.float16)
    row_vectors[rows[rows >= 0]] = vectors[rows >= 0]
    for fid in np.flatnonzero(rows >= 0):
        r = rows[fid]
        clip[r] = scores[fid]
        if near[fid] >= 0:
            nearest_id[r], nearest_sim[r] = str(vindex.ids[near[fid]]), near_sim[fid]
    edges = rows[a][keep], rows[b][keep], sim[keep].astype(np.float64)
    return *edges, nearest_id, nearest_sim, clip, searched, row_vectors


def dedup_workspace(
    ws: Workspace, config: DedupConfig | None = None, model: str | None = None
) -> DedupSummary:
    """Write table ``dedup`` for every usable sample of ``ws`` (one shard, ``all``).

    Semantic edges come from model ``model``'s image index (None: the active model's; built by
    ``engine.vectors.index.build_index``); without one only the pHash pass runs and nearest_id /
    nearest_sim stay null.
    """
    config = config or DedupConfig()
    signals = ws.read_table("signals", ["sample_id", "width", "height", "compression_ratio", "blur", "phash"])
    signals = signals.sort_by("sample_id")
    sample_ids = np.asarray(signals["sample_id"].to_pylist(), dtype=object)
    n = len(sample_ids)
    row_of = {s: r for r, s in enumerate(sample_ids)}
    si, sj, sw, nearest_id, nearest_sim, clip, searched, vectors = semantic_edges(
        ws, config, model, row_of, n
    )
    valid = signals["phash"].is_valid().to_numpy(zero_copy_only=False)
    hashes = pc.fill_null(signals["phash"], 0).to_numpy().astype(np.uint64)
    distance = np.where(valid[si] & valid[sj], np.bitwise_count(hashes[si] ^ hashes[sj]), -1)
    keep = confirmed(sw, distance, config.threshold, config.confirm_threshold, config.confirm_distance)
    ii, jj, ww = [si[keep]], [sj[keep]], [sw[keep]]
    semantic_count = int(keep.sum())
    hashed = np.flatnonzero(valid)
    pa_i, pa_j, dist = phash_pairs(
        pc.fill_null(signals["phash"], 0).to_numpy()[hashed], config.phash_distance
    )
    ii.append(hashed[pa_i])
    jj.append(hashed[pa_j])
    ww.append(1.0 - dist / 64.0)
    i, j, w = np.concatenate(ii).astype(np.int64), np.concatenate(jj).astype(np.int64), np.concatenate(ww)
    quality = signals.append_column("clip_score", pa.array(clip, pa.float64(), mask=np.isnan(clip)))
    rank = representative_order(quality)
    labels, split = find_communities(n, i, j, w, config, rank, vectors)
    best = np.full(n + 1, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(best, labels, rank)
    is_rep = rank == best[labels]
    rep_of_label = np.full(n + 1, -1, np.int64)
    rep_of_label[labels[is_rep]] = np.flatnonzero(is_rep)
    table = pa.table(
        {
            "sample_id": pa.array(sample_ids.tolist(), pa.string()),
            "community_id": pa.array(sample_ids[rep_of_label[labels]].tolist() if n else [], pa.string()),
            "is_representative": pa.array(is_rep, pa.bool_()),
            "nearest_id": pa.array(nearest_id, pa.string()),
            "nearest_sim": pa.array(nearest_sim, pa.float32(), mask=np.isnan(nearest_sim)),
        }
    )
    for shard in ws.list_shards("dedup"):  # one global shard: replace whatever an older run left
        if shard != "all":
            ws.fs.delete_file(ws.path("dedup", f"{shard}.parquet"))
    ws.write_shard("dedup", "all", table)
    sizes = np.bincount(labels, minlength=n + 1) if n else np.zeros(1, np.int64)
    return DedupSummary(
        samples=n,
        communities=int((sizes > 1).sum()),
        duplicates=int(n - is_rep.sum()),
        semantic_pairs=semantic_count,
        searched=searched,
        phash_pairs=len(pa_i),
        components_split=split,
    )


def index_and_dedup(ws: Workspace, progress=None, device: str = "cpu") -> DedupSummary | None:
    """The vector engine's global steps: build or extend both indexes of every embedding model the
    workspace holds, then dedup with the active model's.

    Does nothing (returns None) when the workspace has no ``embeddings`` shards yet.
    """
    from engine.embedding_models import list_models
    from engine.vectors.index import IndexConfig, build_index

    models = list_models(ws)
    if not models:
        return None
    for held in models:
        for modality in ("image", "text"):
            build_index(ws, modality, IndexConfig(device=device), progress=progress, model=held.key)
    if dedup_up_to_date(ws):  # a rerun that added nothing: the communities stand
        return None
    return dedup_workspace(ws, DedupConfig(device=device))


def dedup_up_to_date(ws: Workspace) -> bool:
    """Whether ``dedup`` is newer than every ``signals`` shard, the active image index and the record
    of the active model (its inputs), so curate's global step can skip it."""
    from engine.embedding_models import MODELS_FILE
    from engine.vectors.index import index_meta_path

    if not ws.has_shard("dedup", "all"):
        return False
    inputs = [*ws.shard_files("signals"), index_meta_path(ws, "image"), ws.path(MODELS_FILE)]
    infos = ws.fs.get_file_info([*inputs, ws.shard_path("dedup", "all")])
    times = [i.mtime_ns for i in infos[:-1] if i.type != pafs.FileType.NotFound]
    return max(times, default=0) <= infos[-1].mtime_ns
