"""The vector index: one FAISS index per modality over the ``embeddings`` table.

Layout (DESIGN.md section 2, ``index/``), one folder per embedding model (``engine.embedding_models``;
every function takes ``model``, a model key, None meaning the workspace's active model)::

    WS/index/<model>/<modality>.faiss        the FAISS index (modality: image | text)
    WS/index/<model>/<modality>-ids.parquet  sample_id of FAISS id 0, 1, 2, ... (the id map)
    WS/index/<model>/<modality>.json         metadata: model_id, kind, params, dim, ntotal, its shards

The index type follows the size (``IndexConfig``): an exact inner-product index (``flat``)
below ``exact_max`` vectors, an IVF-PQ index above (or HNSW by choice). The vectors are
L2-normalised, so inner product is cosine similarity. IVF and PQ are trained on a seeded random
sample of the vectors; the rest is added shard by shard, so memory holds one shard plus the
sample. A later call adds only the new ``embeddings`` shards (no rebuild); a changed shard or a
new embedding model rebuilds. The metadata file is written last and marks a complete index.

Searches: text->image (a caption vector against the image index), image->image, image->text
(an image vector against the text index). ``load_index(..., mmap=True)`` maps the file instead of
reading it, so a large index opens instantly and its pages are shared between processes.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from dataclasses import asdict, dataclass, field

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.vectors.faiss_gpu import train_index
from engine.workspace import Workspace

MODALITIES = ("image", "text")
VECTOR_COLUMN = {"image": "image_vec", "text": "text_vec"}  # columns of the embeddings table
EMBEDDINGS = "embeddings"


def embeddings_table(model: str | None = None) -> str:
    """The table name of model ``model``'s embeddings (None: the active model's, ``embeddings``)."""
    return EMBEDDINGS if model is None else f"{EMBEDDINGS}@{model}"


KINDS = ("auto", "flat", "ivfpq", "hnsw")
MMAP_MIN_BYTES = 256 << 20  # load_index(mmap=None) maps files above this size: reading 256 MiB
# takes ~0.2 s here, mapping is instant, and smaller files are not worth a page-cache dependency
SEARCH_BATCH = 8192  # queries per FAISS call: bounds the (batch, k) result arrays, not speed


class VectorIndexError(Exception):
    """A workspace without an index, an incomplete index, or a query it cannot answer."""


@dataclass
class IndexConfig:
    """How to build an index. ``None`` fields are derived from the number of vectors ``n``."""

    kind: str = "auto"  # auto | flat | ivfpq | hnsw; auto: flat below exact_max, else ivfpq
    exact_max: int = 100_000  # flat search of 100k 512-d vectors takes ~5 ms per query on 2 cores;
    # above that an approximate index keeps a query in the low milliseconds (bench/bench_search.py)
    nlist: int | None = None  # IVF cells; default: 4*sqrt(n) rounded to a power of two (faiss's
    # guideline is 4-16*sqrt(n)), so 1M vectors -> 4096 cells of ~250 vectors
    pq_m: int | None = None  # PQ sub-quantizers; default dim/8 -> 64 bytes per 512-d vector (1/32
    # of float32), fine enough to rank a near-duplicate (cos >= 0.9) above unrelated vectors
    pq_nbits: int = 8  # bits per sub-quantizer code: 256 centroids, one byte per code (the usual choice)
    nprobe: int = 16  # IVF cells visited per query: the recall/speed knob (bench/bench_search.py)
    hnsw_m: int = 32  # HNSW neighbours per node: faiss's recommended 16-64 for 512-d
    ef_construction: int = 80  # HNSW build beam: 40 is faiss's default; 80 gains recall at 2x build
    ef_search: int = 128  # HNSW search beam: >= k, and recall@10 > 0.95 on 512-d in our bench
    train_size: int | None = None  # IVF/PQ training sample; default 40 vectors per cell (faiss
    # warns below 39 per centroid) and at least 256 * 64 for the PQ codebooks, at most n
    kmeans_iters: int = 10  # k-means iterations (coarse cells and PQ codebooks): faiss's default 25
    # costs 2.5x the training time; the planted-pair recall in bench/bench_dedup.py stays at 1.0
    seed: int = 0  # the training sample and k-means initialisation
    device: str = "cpu"  # where IVF k-means assigns points (faiss_gpu); the index stays on the CPU

    def resolve(self, n: int, dim: int) -> IndexConfig:
        """The concrete config for ``n`` vectors of ``dim`` (every None filled in)."""
        if self.kind not in KINDS:
            raise VectorIndexError(f"unknown index kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        kind = self.kind if self.kind != "auto" else ("flat" if n < self.exact_max else "ivfpq")
        nlist = self.nlist or int(2 ** round(math.log2(max(1.0, 4 * math.sqrt(max(n, 1))))))
        nlist = max(1, min(nlist, max(1, n // 39)))  # never more cells than the data can train
        pq_m = self.pq_m or max(1, dim // 8)
        if dim % pq_m:
            raise VectorIndexError(f"pq_m={pq_m} must divide the vector dimension {dim}")
        train = min(n, self.train_size or max(40 * nlist, 256 * 64))
        # PQ needs at least 2**nbits training vectors: shrink the codebooks for a small forced ivfpq
        pq_nbits = max(1, min(self.pq_nbits, int(math.log2(max(train, 2)))))
        return IndexConfig(
            kind=kind,
            exact_max=self.exact_max,
            nlist=nlist,
            pq_m=pq_m,
            pq_nbits=pq_nbits,
            nprobe=min(self.nprobe, nlist),
            hnsw_m=self.hnsw_m,
            ef_construction=self.ef_construction,
            ef_search=self.ef_search,
            train_size=train,
            kmeans_iters=self.kmeans_iters,
            seed=self.seed,
            device=self.device,
        )


@dataclass
class IndexMeta:
    """What ``WS/index/<modality>.json`` records about one index."""

    modality: str
    model_id: str
    kind: str
    dim: int
    ntotal: int
    params: dict  # the resolved IndexConfig
    shards: dict[str, int] = field(default_factory=dict)  # embeddings shard -> vectors taken from it
    faiss_version: str = faiss.__version__


@dataclass
class VectorIndex:
    """A loaded index: the FAISS object, its id map and its metadata."""

    index: faiss.Index
    ids: np.ndarray  # sample_id (object array of str) of each FAISS id
    meta: IndexMeta

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (similarity, FAISS id) per query row; id -1 and similarity -inf pad short lists."""
        queries = as_float32(queries)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.shape[1] != self.meta.dim:
            raise VectorIndexError(f"query has dimension {queries.shape[1]}, the index {self.meta.dim}")
        k = max(1, int(k))
        if self.index.ntotal == 0 or queries.shape[0] == 0:
            return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
        sims, ids = [], []
        for start in range(0, len(queries), SEARCH_BATCH):
            s, i = self.index.search(queries[start : start + SEARCH_BATCH], k)
            sims.append(s)
            ids.append(i)
        sims, ids = np.concatenate(sims), np.concatenate(ids)
        sims[ids < 0] = -np.inf
        return sims, ids

    def search_ids(self, queries: np.ndarray, k: int = 10) -> list[list[tuple[str, float]]]:
        """Top-``k`` (sample_id, similarity) per query row, best first."""
        sims, ids = self.search(queries, k)
        return [
            [(str(self.ids[j]), float(s)) for s, j in zip(srow, irow, strict=True) if j >= 0]
            for srow, irow in zip(sims, ids, strict=True)
        ]

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Override the recall/speed knobs of an IVF (nprobe) or HNSW (ef_search) index."""
        set_search_params(
            self.index, nprobe or self.meta.params["nprobe"], ef_search or self.meta.params["ef_search"]
        )


# --- reading vectors --------------------------------------------------------------------------


def as_float32(vectors: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(vectors, dtype=np.float32)


def vectors_from_column(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """An Arrow list/fixed-size-list column -> (valid row mask, (n_valid, dim) float32 array).

    Null rows (an image that did not decode, an empty caption) are left out; the mask says which.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    valid = np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    kept = column.filter(pa.array(valid))
    if len(kept) == 0:
        return valid, np.zeros((0, 0), np.float32)
    values = pc.list_flatten(kept).to_numpy(zero_copy_only=False)
    dim = len(values) // len(kept)
    if dim * len(kept) != len(values):
        raise VectorIndexError("vectors of different lengths in one embeddings column")
    return valid, values.reshape(len(kept), dim).astype(np.float32)


def read_embedding_shard(
    ws: Workspace, shard_id: str, modality: str, model: str | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """(sample_ids, float32 vectors, model_id) of the non-null vectors of one embeddings shard."""
    column = VECTOR_COLUMN[modality]
    path = ws.shard_path(embeddings_table(model), shard_id)
    table = pq.read_table(path, columns=["sample_id", "model_id", column], filesystem=ws.fs)
    valid, vectors = vectors_from_column(table[column])
    sample_ids = np.asarray(table["sample_id"].to_pylist(), dtype=object)[valid]
    models = set(table["model_id"].filter(pa.array(valid)).to_pylist())
    if len(models) > 1:
        raise VectorIndexError(f"embeddings shard {shard_id} mixes models {sorted(models)}")
    return sample_ids, vectors, (models.pop() if models else "")


def embedding_shards(ws: Workspace, model: str | None = None) -> dict[str, int]:
    """Every complete embeddings shard and its row count (from the Parquet footer, no data read)."""
    table = embeddings_table(model)
    return {
        shard: pq.ParquetFile(ws.shard_path(table, shard), filesystem=ws.fs).metadata.num_rows
        for shard in ws.list_shards(table)
    }


def shard_fingerprints(ws: Workspace, shards: dict[str, int], model: str | None = None) -> dict[str, str]:
    """rows:bytes:mtime of each shard: a rewritten shard (rows dropped by the cross-shard duplicate
    pass, new embeddings) gets a new fingerprint, since every write is a new file renamed in place."""
    infos = ws.fs.get_file_info([ws.shard_path(embeddings_table(model), s) for s in shards])
    return {s: f"{n}:{i.size}:{i.mtime_ns}" for (s, n), i in zip(shards.items(), infos, strict=True)}


# --- building ---------------------------------------------------------------------------------


def create_faiss_index(config: IndexConfig, dim: int) -> faiss.Index:
    """An empty FAISS index of the resolved ``config`` (inner product throughout)."""
    ip = faiss.METRIC_INNER_PRODUCT
    if config.kind == "flat":
        return faiss.IndexFlatIP(dim)
    if config.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, ip)
        index.hnsw.efConstruction = config.ef_construction
        return index
    if config.kind == "ivfpq":
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(quantizer, dim, config.nlist, config.pq_m, config.pq_nbits, ip)
        index.cp.seed = config.seed  # k-means initialisation of the coarse quantizer
        index.cp.niter = index.pq.cp.niter = config.kmeans_iters
        index.pq.cp.seed = config.seed
        index.cp.verbose = index.pq.cp.verbose = False
        return index
    raise VectorIndexError(f"cannot create an index of kind {config.kind!r}")


def set_search_params(index: faiss.Index, nprobe: int, ef_search: int) -> None:
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = int(nprobe)
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = int(ef_search)


def add_vectors(index: faiss.Index, vectors: np.ndarray, kind: str) -> None:
    """Add vectors; HNSW is built on one thread, since its graph depends on the insertion order
    and a parallel build would give a different (equally good) graph on every run."""
    if len(vectors) == 0:
        return
    if kind != "hnsw":
        index.add(as_float32(vectors))
        return
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        index.add(as_float32(vectors))
    finally:
        faiss.omp_set_num_threads(threads)


def training_sample(
    ws: Workspace, shards: dict[str, int], modality: str, size: int, seed: int, model: str | None = None
) -> np.ndarray:
    """A seeded uniform sample of ``size`` rows over all shards (null vectors skipped), float32."""
    total = sum(shards.values())
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(total, size=min(size, total), replace=False))
    parts, offset = [], 0
    for shard, rows in shards.items():
        local = picked[(picked >= offset) & (picked < offset + rows)] - offset
        offset += rows
        if len(local) == 0:
            continue
        column = VECTOR_COLUMN[modality]
        path = ws.shard_path(embeddings_table(model), shard)
        table = pq.read_table(path, columns=[column], filesystem=ws.fs)
        _, vectors = vectors_from_column(table[column].take(pa.array(local)))
        parts.append(vectors)
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def build_index(
    ws: Workspace,
    modality: str = "image",
    config: IndexConfig | None = None,
    rebuild: bool = False,
    progress=None,
    model: str | None = None,
) -> IndexMeta | None:
    """Build or extend ``WS/index/<model>/<modality>``; returns its metadata (None: no vectors at all).

    New embeddings shards are added to an existing index. It is rebuilt when ``rebuild`` is set, a
    shard it holds changed or went, the model changed, or the size calls for another kind (auto: a
    flat index past ``exact_max`` becomes IVF-PQ). ``progress(n)``: after each shard, its vectors.
    """
    if modality not in MODALITIES:
        raise VectorIndexError(f"unknown modality {modality!r}; choose image or text")
    config = config or IndexConfig()
    shards = embedding_shards(ws, model)
    prints = shard_fingerprints(ws, shards, model)
    existing = None if rebuild else read_meta(ws, modality, model)
    if existing is not None and any(prints.get(s) != f for s, f in existing["shard_fingerprints"].items()):
        existing = None  # a shard was rewritten (cross-shard dedup, new model) or removed: rebuild
    if (
        existing is not None
        and config.resolve(sum(shards.values()), existing["dim"]).kind != existing["kind"]
    ):
        existing = None  # grown past exact_max: the flat index becomes an IVF-PQ one, built anew
    if existing is not None:
        vindex = load_index(ws, modality, mmap=False, model=model)
        index, ids, meta = vindex.index, list(vindex.ids), vindex.meta
        fingerprints = dict(existing["shard_fingerprints"])
        todo = [s for s in shards if s not in fingerprints]
    else:
        index, ids, meta, fingerprints, todo = None, [], None, {}, list(shards)
        if not shards:  # every shard went (a removed source): no index, rather than a stale one
            for suffix in (".json", ".faiss", "-ids.parquet"):  # the metadata first: it marks a whole index
                if ws.exists(ws.index_rel(model), f"{modality}{suffix}"):
                    ws.fs.delete_file(_index_path(ws, modality, suffix, model))
            return None
        _, dim_probe, _ = _first_vectors(ws, shards, modality, model)
        if dim_probe is None:
            return None
        resolved = config.resolve(sum(shards.values()), dim_probe)
        index = create_faiss_index(resolved, dim_probe)
        if not index.is_trained:
            sample = training_sample(ws, shards, modality, resolved.train_size, resolved.seed, model)
            train_index(index, as_float32(sample), config.device)
        params = {k: v for k, v in asdict(resolved).items() if k != "device"}  # same file on CPU and GPU
        meta = IndexMeta(modality, "", resolved.kind, dim_probe, 0, params)
    if not todo and existing is not None:
        return meta
    for shard in todo:
        sample_ids, vectors, model_id = read_embedding_shard(ws, shard, modality, model)
        if len(vectors):
            if meta.model_id and model_id != meta.model_id:
                if existing is not None:  # the embeddings were remade with another model
                    return build_index(ws, modality, config, rebuild=True, progress=progress, model=model)
                raise VectorIndexError(f"embeddings mix models {meta.model_id!r} and {model_id!r}")
            meta.model_id = model_id
            if vectors.shape[1] != meta.dim:
                raise VectorIndexError(
                    f"shard {shard} has {vectors.shape[1]}-d vectors, the index {meta.dim}"
                )
            add_vectors(index, vectors, meta.kind)
            ids.extend(sample_ids)
        fingerprints[shard] = prints[shard]
        meta.shards[shard] = len(vectors)
        if progress:
            progress(len(vectors))
    meta.ntotal = int(index.ntotal)
    save_index(ws, index, np.asarray(ids, dtype=object), meta, fingerprints, model)
    return meta


def _first_vectors(ws: Workspace, shards: dict[str, int], modality: str, model: str | None):
    """The first shard with a non-null vector: (shard, dim, model_id), or (None, None, None)."""
    for shard in shards:
        _, vectors, model_id = read_embedding_shard(ws, shard, modality, model)
        if len(vectors):
            return shard, vectors.shape[1], model_id
    return None, None, None


# --- persistence ------------------------------------------------------------------------------


def _index_path(ws: Workspace, modality: str, suffix: str, model: str | None = None) -> str:
    return ws.path(ws.index_rel(model), f"{modality}{suffix}")


def index_meta_path(ws: Workspace, modality: str, model: str | None = None) -> str:
    """The metadata file of an index (written last: its change marks a new index)."""
    return _index_path(ws, modality, ".json", model)


def save_index(
    ws: Workspace,
    index: faiss.Index,
    ids: np.ndarray,
    meta: IndexMeta,
    fingerprints: dict,
    model: str | None = None,
) -> None:
    """Write index, id map, then metadata, each atomically (the metadata marks a complete index)."""
    folder = ws.index_rel(model)
    ws.fs.create_dir(ws.path(folder), recursive=True)
    if ws.is_local:
        tmp = ws.path(ws.tmp, f"{uuid.uuid4().hex}-{meta.modality}.faiss")
        os.makedirs(os.path.dirname(tmp), exist_ok=True)
        faiss.write_index(index, tmp)
        os.replace(tmp, _index_path(ws, meta.modality, ".faiss", model))
    else:
        ws.write_bytes(f"{folder}/{meta.modality}.faiss", faiss.serialize_index(index).tobytes())
    id_table = pa.table({"sample_id": pa.array(list(ids), pa.string())})
    ws.write_parquet(f"{folder}/{meta.modality}-ids.parquet", id_table)
    record = {**asdict(meta), "shard_fingerprints": fingerprints}
    ws.write_bytes(f"{folder}/{meta.modality}.json", json.dumps(record, indent=1, sort_keys=True).encode())


def read_meta(ws: Workspace, modality: str, model: str | None = None) -> dict | None:
    """The metadata record of an index, or None when there is no complete index."""
    if not ws.exists(ws.index_rel(model), f"{modality}.json"):
        return None
    with ws.fs.open_input_stream(index_meta_path(ws, modality, model)) as f:
        return json.loads(f.read().decode())


def load_index(
    ws: Workspace, modality: str = "image", mmap: bool | None = None, model: str | None = None
) -> VectorIndex:
    """Load ``WS/index/<model>/<modality>``; ``mmap`` maps the file (default: when it is large and local)."""
    record = read_meta(ws, modality, model)
    if record is None:
        raise VectorIndexError(f"no {modality} index in {ws.root}: run 'zcurate index --workspace {ws.root}'")
    record.pop("shard_fingerprints", None)
    meta = IndexMeta(**record)
    path = _index_path(ws, modality, ".faiss", model)
    if ws.is_local:
        if mmap is None:
            mmap = os.path.getsize(path) >= MMAP_MIN_BYTES
        index = faiss.read_index(path, faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0)
    else:
        with ws.fs.open_input_stream(path) as f:
            index = faiss.deserialize_index(np.frombuffer(f.read(), dtype=np.uint8))
    table = pq.read_table(_index_path(ws, modality, "-ids.parquet", model), filesystem=ws.fs)
    ids = np.asarray(table["sample_id"].to_pylist(), dtype=object)
    if not (index.ntotal == len(ids) == meta.ntotal):
        raise VectorIndexError(
            f"the {modality} index is incomplete ({index.ntotal} vectors, {len(ids)} ids, "
            f"{meta.ntotal} expected): run 'zcurate index --rebuild --workspace {ws.root}'"
        )
    set_search_params(index, meta.params["nprobe"], meta.params["ef_search"])
    return VectorIndex(index, ids, meta)
