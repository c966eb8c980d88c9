"""engine/vectors/index.py on real FAISS with vectors written as real embeddings shards."""

from __future__ import annotations

import filecmp

import numpy as np
import pyarrow as pa
import pytest

from engine.vectors.index import IndexConfig, VectorIndexError, build_index, load_index
from engine.workspace import Workspace

DIM = 32


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write_embeddings(ws: Workspace, shard: str, vectors: np.ndarray, prefix: str, model="m@1") -> list[str]:
    """An embeddings shard as the embed stage writes it: float16 unit vectors per sample."""
    ids = [f"{prefix}{i:06d}" for i in range(len(vectors))]
    half = pa.array(list(vectors.astype(np.float16)), pa.list_(pa.float16()))
    table = pa.table(
        {
            "sample_id": ids,
            "image_id": ids,
            "model_id": [model] * len(ids),
            "image_vec": half,
            "text_vec": half,
            "clip_score": pa.array(np.ones(len(ids), np.float32)),
        }
    )
    ws.write_parquet(f"embeddings/{shard}.parquet", table)
    return ids


@pytest.fixture
def vectors() -> np.ndarray:
    return unit(np.random.default_rng(0).standard_normal((3000, DIM)))


def test_save_load_append_round_trip(scratch_dir, vectors):
    ws = Workspace(scratch_dir)
    ids = write_embeddings(ws, "a-0", vectors[:1000], "a")
    meta = build_index(ws, "image")
    assert (meta.kind, meta.ntotal, meta.model_id) == ("flat", 1000, "m@1")
    ids += write_embeddings(ws, "a-1", vectors[1000:1500], "b")
    meta = build_index(ws, "image")  # appends the new shard only
    assert meta.ntotal == 1500 and list(meta.shards) == ["a-0", "a-1"]
    loaded = load_index(ws, "image")
    assert list(loaded.ids) == ids
    hits = loaded.search_ids(vectors[1200], k=3)[0]
    assert hits[0][0] == ids[1200] and hits[0][1] == pytest.approx(1.0, abs=2e-3)
    # the appended index equals one built from scratch over both shards
    sims_a, ids_a = loaded.search(vectors[:200], 10)
    build_index(ws, "image", rebuild=True)
    sims_b, ids_b = load_index(ws, "image").search(vectors[:200], 10)
    np.testing.assert_array_equal(ids_a, ids_b)
    np.testing.assert_allclose(sims_a, sims_b)


def test_rewritten_shard_or_new_model_rebuilds(scratch_dir, vectors):
    ws = Workspace(scratch_dir)
    write_embeddings(ws, "a-0", vectors[:500], "a")
    write_embeddings(ws, "a-1", vectors[500:900], "b")
    build_index(ws, "image")
    write_embeddings(ws, "a-1", vectors[500:800], "b")  # a shard lost rows (cross-shard dedup)
    assert build_index(ws, "image").ntotal == 800
    write_embeddings(ws, "a-0", vectors[:500], "a", model="other@2")
    write_embeddings(ws, "a-1", vectors[500:800], "b", model="other@2")
    assert build_index(ws, "image").model_id == "other@2"


def test_exact_and_ivfpq_agree(scratch_dir, vectors):
    """recall@10 of IVF-PQ against the exact index on the same vectors."""
    ws = Workspace(scratch_dir)
    write_embeddings(ws, "a-0", vectors, "a")
    build_index(ws, "image", IndexConfig(kind="flat"))
    _, exact = load_index(ws, "image").search(vectors[:300], 10)
    meta = build_index(ws, "image", IndexConfig(kind="ivfpq", nlist=16, nprobe=16, pq_m=16), rebuild=True)
    assert meta.kind == "ivfpq"
    _, approx = load_index(ws, "image").search(vectors[:300], 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.8, recall  # 16-byte PQ codes of random 32-d vectors: the hardest case
    assert (approx[:, 0] == np.arange(300)).mean() >= 0.98  # every vector finds itself first


def test_hnsw_and_mmap_load(scratch_dir, vectors):
    ws = Workspace(scratch_dir)
    write_embeddings(ws, "a-0", vectors, "a")
    build_index(ws, "image", IndexConfig(kind="hnsw", hnsw_m=16))
    top = np.argsort(-(vectors[:100] @ vectors.T), axis=1)[:, :10]
    for mmap in (False, True):
        loaded = load_index(ws, "image", mmap=mmap)
        _, ids = loaded.search(vectors[:100], 10)
        recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(ids, top, strict=True)])
        assert recall >= 0.95


def test_ivfpq_mmap_and_deterministic(scratch_dir, vectors, tmp_path):
    config = IndexConfig(kind="ivfpq", nlist=16, pq_m=8, pq_nbits=6)
    files = []
    for name in ("one", "two"):
        ws = Workspace(str(tmp_path / name))
        write_embeddings(ws, "a-0", vectors, "a")
        build_index(ws, "image", config)
        files.append(ws.path("index", "image.faiss"))
    assert filecmp.cmp(*files, shallow=False)  # same vectors + seed -> byte-identical index
    loaded = load_index(Workspace(str(tmp_path / "one")), "image", mmap=True)
    assert loaded.search_ids(vectors[5], 1)[0][0][0] == "a000005"


def test_image_to_text_search(scratch_dir):
    ws = Workspace(scratch_dir)
    rng = np.random.default_rng(1)
    image = unit(rng.standard_normal((50, DIM)))
    text = unit(image + 0.05 * rng.standard_normal((50, DIM)))  # each caption near its image
    ids = [f"s{i:03d}" for i in range(50)]
    table = pa.table(
        {
            "sample_id": ids,
            "image_id": ids,
            "model_id": ["m"] * 50,
            "image_vec": pa.array(list(image.astype(np.float16)), pa.list_(pa.float16())),
            "text_vec": pa.array(list(text.astype(np.float16)), pa.list_(pa.float16())),
        }
    )
    ws.write_parquet("embeddings/x-0.parquet", table)
    build_index(ws, "image")
    build_index(ws, "text")
    assert [h[0][0] for h in load_index(ws, "text").search_ids(image[:5], 1)] == ids[:5]  # image->text
    assert [h[0][0] for h in load_index(ws, "image").search_ids(text[:5], 1)] == ids[:5]  # text->image


def test_empty_single_and_null_vectors(scratch_dir):
    ws = Workspace(scratch_dir)
    assert build_index(ws, "image") is None  # no embeddings at all
    with pytest.raises(VectorIndexError, match="zcurate index"):
        load_index(ws, "image")
    empty = pa.table(
        {
            "sample_id": pa.array([], pa.string()),
            "image_id": pa.array([], pa.string()),
            "model_id": pa.array([], pa.string()),
            "image_vec": pa.array([], pa.list_(pa.float16())),
            "text_vec": pa.array([], pa.list_(pa.float16())),
        }
    )
    ws.write_parquet("embeddings/x-0.parquet", empty)
    assert build_index(ws, "image") is None
    one = pa.table(
        {
            "sample_id": ["s0", "s1"],
            "image_id": ["i0", "i1"],
            "model_id": ["m", "m"],
            "image_vec": pa.array([[1.0] + [0.0] * (DIM - 1), None], pa.list_(pa.float16())),
            "text_vec": pa.array([[0.0, 1.0] + [0.0] * (DIM - 2), None], pa.list_(pa.float16())),
        }
    )
    ws.write_parquet("embeddings/x-1.parquet", one)
    meta = build_index(ws, "image")
    assert meta.ntotal == 1  # the null vector (an image that failed) is left out
    hits = load_index(ws, "image").search_ids(np.eye(DIM, dtype=np.float32)[:1], k=5)
    assert hits == [[("s0", pytest.approx(1.0))]]
    with pytest.raises(VectorIndexError, match="dimension"):
        load_index(ws, "image").search(np.ones(3, np.float32))


def test_a_flat_index_grown_past_exact_max_is_rebuilt_as_ivfpq(scratch_dir, vectors):
    """Appending keeps the kind while it fits; past ``exact_max`` the documented rule rebuilds."""
    ws = Workspace(scratch_dir)
    config = IndexConfig(exact_max=2000)
    write_embeddings(ws, "a-0", vectors[:1500], "a")
    assert build_index(ws, "image", config).kind == "flat"
    write_embeddings(ws, "a-1", vectors[1500:1900], "b")
    meta = build_index(ws, "image", config)
    assert (meta.kind, meta.ntotal) == ("flat", 1900)  # appended
    write_embeddings(ws, "a-2", vectors[1900:], "c")
    meta = build_index(ws, "image", config)
    assert (meta.kind, meta.ntotal, list(meta.shards)) == ("ivfpq", 3000, ["a-0", "a-1", "a-2"])


def test_shards_added_out_of_name_order_keep_their_vectors_aligned(scratch_dir, vectors):
    """A later source whose shard ids sort first (a second source of a workspace): dedup reads
    the vectors back in FAISS id order, not in shard-name order."""
    from engine.vectors.dedup import load_image_vectors

    ws = Workspace(scratch_dir)
    write_embeddings(ws, "b-0", vectors[:300], "b")
    build_index(ws, "image")
    write_embeddings(ws, "a-0", vectors[300:500], "a")
    build_index(ws, "image")
    vindex = load_index(ws, "image")
    loaded, _ = load_image_vectors(ws, vindex)
    np.testing.assert_allclose(loaded.astype(np.float32), vectors[:500], atol=2e-3)
