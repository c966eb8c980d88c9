"""The manifest pool without Ray: the sample_id join (align) and load_pool on a hand-written
workspace, including samples missing from stage tables and shards written out of order."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest

from engine import schema
from engine.curation.manifest import ManifestError, build_manifest
from engine.curation.pool import PoolIndex, align, load_pool
from engine.curation.recipe import load_recipe
from engine.workspace import Workspace


def hex_id(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def test_align_finds_rows_checks_full_ids_and_handles_shared_prefixes():
    ids = [hex_id(str(i)) for i in range(1000)]
    twin = ids[7][:16] + "f" * 16  # same 64-bit key as ids[7], another id
    pool = PoolIndex.build(pa.array([*ids, twin]))
    queries = pa.array([ids[3], "0" * 32, twin, ids[7], ids[999], ids[7][:16] + "0" * 16])
    assert align(pool, queries).tolist() == [3, -1, 1000, 7, 999, -1]
    assert align(pool, pa.array([], pa.string())).tolist() == []


def test_align_with_ids_that_are_not_hex_digests():
    pool = PoolIndex.build(pa.array(["cat", "dog", "x" * 32]))
    assert align(pool, pa.array(["dog", "eel", "x" * 32, "cat"])).tolist() == [1, -1, 2, 0]


def write_workspace(root: str, n: int = 60) -> tuple[Workspace, list[str]]:
    """Two shards of usable samples (plus rejects), signals for all but one, clip scores for half,
    dedup rows shuffled, tags for some samples."""
    ws = Workspace(root)
    ids = [hex_id(f"s{i}") for i in range(n)]
    rng = np.random.default_rng(0)
    for shard, part in (("a-000000", range(0, n // 2)), ("a-000001", range(n // 2, n))):
        rows = [
            {"sample_id": ids[i], "image_id": ids[i], "source": "x", "source_kind": "folder",
             "shard_id": shard, "row_index": k, "ref": str(i), "uri": f"/img/{i}.png",
             "caption": f"caption {i}", "status": "ok", "warnings": []}
            for k, i in enumerate(part)
        ] + [{"sample_id": hex_id(f"bad{shard}"), "source": "x", "source_kind": "folder", "shard_id": shard,
              "row_index": 99, "ref": "bad", "uri": "/img/bad.png", "status": "rejected",
              "reject_reason": "corrupt_image", "warnings": []}]  # fmt: skip
        ws.write_shard("samples", shard, pa.Table.from_pylist(rows, schema=schema.SAMPLES))
        signals = [
            {"sample_id": ids[i], "image_id": ids[i], "width": 100 + i, "height": 200, "entropy": float(i)}
            for i in part
            if i != 5  # sample 5 was never profiled
        ]
        ws.write_shard("signals", shard, pa.Table.from_pylist(signals, schema=schema.SIGNALS))
        clip = [{"sample_id": ids[i], "image_id": ids[i], "clip_score": i / n} for i in part if i % 2 == 0]
        ws.write_shard("embeddings", shard, pa.Table.from_pylist(clip, schema=schema.EMBEDDINGS))
        tags = [
            {"sample_id": ids[i], "concept_id": c, "source": "caption", "score": 1.0, "hits": 1}
            for i in part
            for c in ([1, 2] if i % 3 == 0 else [3] if i % 3 == 1 else [])
        ]
        ws.write_shard("tags", shard, pa.Table.from_pylist(tags, schema=schema.TAGS))
    dedup = [
        {"sample_id": ids[i], "community_id": ids[i - i % 2], "is_representative": i % 2 == 0}
        for i in range(n)
    ]
    order = rng.permutation(n)
    ws.write_shard("dedup", "all", pa.Table.from_pylist([dedup[i] for i in order], schema=schema.DEDUP))
    return ws, ids


def test_load_pool_joins_every_table_in_workspace_order(tmp_path):
    ws, ids = write_workspace(str(tmp_path / "ws"))
    recipe = load_recipe("lowres", {"concepts.min_score": 0.0})
    pool, sets, counts = load_pool(ws, recipe)
    expected = [s for i, s in enumerate(ids) if i != 5]
    assert pool["sample_id"].to_pylist() == expected and counts == {"unprofiled": 1}
    rows = {r["sample_id"]: r for r in pool.to_pylist()}
    for i, s in enumerate(ids):
        if i == 5:
            continue
        r = rows[s]
        assert r["width"] == 100 + i and r["min_side"] == min(100 + i, 200)
        assert r["clip_score"] == (pytest.approx(i / 60) if i % 2 == 0 else None)
        assert r["is_representative"] == (i % 2 == 0) and r["community_id"] == ids[i - i % 2]
        assert r["nsfw_score"] is None  # no safety table
    concepts = [
        sorted(sets.concept_ids[sets.index[a:b]].tolist())
        for a, b in zip(sets.offsets[:-1], sets.offsets[1:], strict=True)
    ]
    for row, s in enumerate(pool["sample_id"].to_pylist()):
        i = ids.index(s)
        assert concepts[row] == ([1, 2] if i % 3 == 0 else [3] if i % 3 == 1 else [])


def test_manifest_on_the_hand_written_workspace(tmp_path):
    ws, _ = write_workspace(str(tmp_path / "ws"))
    recipe = load_recipe("lowres", {"filters.min_side.min": 16, "concepts.min_score": 0.0})
    result = build_manifest(ws, recipe, seed=0)
    side = result.sidecar
    assert side["counts"]["unprofiled"] == 1 and side["counts"]["dedup_removed"] > 0
    assert any("filter nsfw_score" in w for w in side["warnings"])  # no safety stage: kept, warned
    version, _, code = side["engine_version"].partition("+")  # the manifest code's digest counts
    assert version and len(code) == 12 and int(code, 16) >= 0
    again = build_manifest(ws, recipe, seed=0, force=True)
    with open(result.path, "rb") as a, open(again.path, "rb") as b:
        assert a.read() == b.read()
    with pytest.raises(ManifestError, match="keeps no sample"):
        build_manifest(ws, load_recipe("lowres", {"filters.entropy.min": 1e9}), seed=0)


def test_concepts_mapped_to_their_ancestors_at_a_depth(tmp_path):
    ws, ids = write_workspace(str(tmp_path / "ws"))
    depth = {20: 0, 10: 1, 3: 1, 1: 2, 2: 2}  # 20 root; 10 parent of 1 and 2; 3 under the root
    concepts = [
        {"concept_id": c, "synset": f"c{c}.n.01", "depth": d, "source": "wordnet"} for c, d in depth.items()
    ]
    ancestors = [(1, 1, 0), (1, 10, 1), (1, 20, 2), (2, 2, 0), (2, 10, 1), (2, 20, 2), (3, 3, 0), (3, 20, 1)]
    ancestors += [(10, 10, 0), (10, 20, 1), (20, 20, 0)]
    ws.write_shard("concepts", schema.GRAPH_SHARD, pa.Table.from_pylist(concepts, schema=schema.CONCEPTS))
    rows = [{"concept_id": c, "ancestor_id": a, "distance": d} for c, a, d in ancestors]
    ws.write_shard(
        "concept_ancestors", schema.GRAPH_SHARD, pa.Table.from_pylist(rows, schema=schema.CONCEPT_ANCESTORS)
    )
    pool, sets, _ = load_pool(ws, load_recipe("lowres", {"concepts.min_score": 0.0, "concepts.depth": 1}))
    assert sets.concept_ids.tolist() == [3, 10]  # 1 and 2 become their parent 10; 3 is at depth 1
    for row, s in enumerate(pool["sample_id"].to_pylist()):
        i = ids.index(s)
        carried = sets.concept_ids[sets.index[sets.offsets[row] : sets.offsets[row + 1]]].tolist()
        assert carried == ([10] if i % 3 == 0 else [3] if i % 3 == 1 else [])
