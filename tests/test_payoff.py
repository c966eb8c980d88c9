"""The pay-off experiment's parts (bench/payoff): the noisy pool has the defects it states, its truth
and an evaluation set that shares nothing with it, the same seed builds the same files, and the
defect table counts what a manifest kept. The whole experiment runs in tests/test_notebooks.py."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from bench.payoff.arms import curation_scores, defect_table, random_manifest, raw_manifest
from bench.payoff.pool import (
    CLEAN,
    JUNK,
    LOW_QUALITY,
    MISMATCHED,
    NEAR_DUPLICATE,
    WATERMARK,
    PoolConfig,
    average_hash,
    build_pool,
    normalise,
)

SMALL = PoolConfig(clean=40, eval=12, flood_images=2, flood_copies=4, scan_limit=1500)


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("pool"))
    build_pool(out, SMALL)
    return out


def test_the_pool_has_the_stated_defects(pool):
    truth = pq.read_table(os.path.join(pool, "truth.parquet")).to_pylist()
    counts = {label: sum(r["defect"] == label for r in truth) for label in {r["defect"] for r in truth}}
    assert counts == {
        MISMATCHED: 10,
        LOW_QUALITY: 5,
        WATERMARK: 3,
        CLEAN: 22,
        NEAR_DUPLICATE: 2 * 4,
        JUNK: 2,
    }
    for r in truth:
        if r["defect"] == MISMATCHED:
            assert r["caption"] != r["true_caption"]
        elif r["defect"] != JUNK:
            assert r["caption"] == r["true_caption"]
    flooded = {r["base_index"] for r in truth if r["defect"] == NEAR_DUPLICATE}
    clean_bases = {r["base_index"] for r in truth if r["defect"] == CLEAN}
    assert len(flooded) == 2 and flooded <= clean_bases  # the original of a flood stays, clean
    assert {r["subtype"] for r in truth if r["defect"] == LOW_QUALITY} == {
        "blur",
        "tiny_upscaled",
        "jpeg_q5",
        "letterbox",
    }


def test_the_pool_folder_is_the_truth_and_nothing_more(pool):
    truth = pq.read_table(os.path.join(pool, "truth.parquet"))
    files = sorted(os.listdir(os.path.join(pool, "pool")))
    images = [f for f in files if not f.endswith(".txt")]
    assert images == sorted(truth["file"].to_pylist())
    assert len(files) == 2 * len(images)  # every image has its caption file
    for r in truth.to_pylist():
        with open(os.path.join(pool, "pool", os.path.splitext(r["file"])[0] + ".txt"), encoding="utf-8") as f:
            assert f.read() == r["caption"]
        if r["subtype"] == "corrupt":
            with pytest.raises(Exception):  # noqa: B017 - PIL raises several kinds
                Image.open(r["path"]).load()


def test_the_evaluation_set_shares_nothing_with_the_pool(pool):
    truth = pq.read_table(os.path.join(pool, "truth.parquet")).to_pylist()
    evaluation = pq.read_table(os.path.join(pool, "eval.parquet")).to_pylist()
    assert len(evaluation) == SMALL.eval
    pool_captions = {normalise(r["true_caption"]) for r in truth if r["true_caption"]}
    assert not pool_captions & {normalise(r["caption"]) for r in evaluation}
    pool_hashes = {
        average_hash(Image.open(r["path"]).convert("RGB"))
        for r in truth
        if r["defect"] in (CLEAN, MISMATCHED)
    }
    assert not pool_hashes & {average_hash(Image.open(r["path"]).convert("RGB")) for r in evaluation}


def test_the_same_seed_builds_the_same_pool(pool, tmp_path):
    again = build_pool(str(tmp_path), SMALL)
    assert again["pool_rows"] == pq.read_metadata(os.path.join(pool, "truth.parquet")).num_rows
    a = pq.read_table(os.path.join(pool, "truth.parquet")).drop(["path"])
    b = pq.read_table(str(tmp_path / "truth.parquet")).drop(["path"])
    assert a.equals(b)


def test_the_defect_table_counts_what_the_manifest_kept():
    truth = pa.table(
        {
            "file": ["a.png", "b.png", "c.png", "d.png", "e.png", "f.png"],
            "path": ["/p/a.png", "/p/b.png", "/p/c.png", "/p/d.png", "/p/e.png", "/p/f.png"],
            "caption": ["x"] * 6,
            "defect": [CLEAN, CLEAN, MISMATCHED, MISMATCHED, JUNK, NEAR_DUPLICATE],
        }
    )
    manifest = pa.table({"uri": ["/ws/a.png", "/ws/c.png", "/ws/f.png"], "weight": [2.0, 1.0, 1.0]})
    rows = {r["class"]: r for r in defect_table(truth, manifest)}
    assert rows[CLEAN]["kept"] == 1 and rows[CLEAN]["kept_fraction"] == 0.5
    assert rows[MISMATCHED]["kept"] == 1 and rows[JUNK]["kept"] == 0
    assert rows[CLEAN]["weight_share"] == 0.5 and rows[CLEAN]["pool_share"] == pytest.approx(2 / 6)
    assert rows[LOW_QUALITY]["pool_rows"] == 0 and rows[LOW_QUALITY]["kept_fraction"] is None
    scores = curation_scores(list(rows.values()))
    assert scores["precision"] == pytest.approx(1 / 3) and scores["clean_recall"] == 0.5
    assert scores["defects_removed"][JUNK] == 1.0 and scores["defects_removed"][MISMATCHED] == 0.5


def test_the_random_arm_is_a_seeded_uniform_subset():
    truth = pa.table({"path": [f"/p/{i}.png" for i in range(50)], "caption": [str(i) for i in range(50)]})
    raw = raw_manifest(truth, 32)
    a, b, c = random_manifest(raw, 20, 0), random_manifest(raw, 20, 0), random_manifest(raw, 20, 1)
    assert a.equals(b) and not a.equals(c) and a.num_rows == 20
    assert len(set(a["sample_id"].to_pylist())) == 20
    assert np.all(raw["weight"].to_numpy() == 1.0) and set(raw["bucket_h"].to_pylist()) == {32}
