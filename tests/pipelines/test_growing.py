"""A workspace that grows: sources added one after another end where one run over all of them ends.

Three folder sources of real openclipart images, curated into one workspace at different times
with the embed stage and every global step (index, dedup, tags, catalog) after each:

* ``a``: 8 pairs;
* ``b``: 6 new pairs, the image of ``a``'s first pair with another caption (same image, other
  caption) and a half-size copy of ``a``'s second image (a near-duplicate across sources);
* ``c``: two of ``b``'s records again, byte for byte (identical records), and 4 new pairs.

The reference is the same shards with every global step done once, from nothing, as one run over
all three would. Both must hold the same index contents, near-duplicate communities, tags and
catalog answers, and build the same manifest bytes.
"""

from __future__ import annotations

import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.catalog import run_sql
from engine.embedding_models import active_model
from engine.profiling.source import load_source
from engine.vectors.index import read_meta
from engine.workspace import Workspace
from pipelines.curate import run_curate
from pipelines.stages import build_image_stages
from tests.neardup import edit, load_original, openclipart_files, png

pytestmark = pytest.mark.slow  # four curate jobs with embeddings and tags: ~3 minutes


def write_pairs(folder: str, pairs: list[tuple[str, bytes, str]]) -> str:
    os.makedirs(folder)
    for name, data, caption in pairs:
        with open(os.path.join(folder, f"{name}.png"), "wb") as f:
            f.write(data)
        with open(os.path.join(folder, f"{name}.txt"), "w", encoding="utf-8") as f:
            f.write(caption)
    return folder


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("growing") / "all"
    files = [png(load_original(path)) for path in openclipart_files(18, seed=11)]
    resized = edit(load_original(openclipart_files(18, seed=11)[1]), "resized")[0]
    write_pairs(str(root / "a"), [(f"a{i}", files[i], f"first source picture {i}") for i in range(8)])
    b = [(f"b{i}", files[8 + i], f"second source drawing {i}") for i in range(6)]
    b += [("b6", files[0], "the first picture with another caption"), ("b7", resized, "a smaller copy")]
    write_pairs(str(root / "b"), b)
    c = [("c0", files[8], "second source drawing 0"), ("c1", files[9], "second source drawing 1")]
    c += [(f"c{i}", files[14 + i - 2], f"third source clip art {i}") for i in range(2, 6)]
    write_pairs(str(root / "c"), c)
    return str(root)


def curate(folder: str, ws: Workspace):
    stages = build_image_stages(["embed"], device="cpu")
    return run_curate(load_source(folder), ws, shard_size=8, num_cpus=2, progress=False, image_stages=stages)


@pytest.fixture(scope="module")
def grown(sources, tmp_path_factory) -> Workspace:
    ws = Workspace(str(tmp_path_factory.mktemp("grown") / "ws"))
    for name in ("a", "b", "c"):
        curate(os.path.join(sources, name), ws)
    return ws


DERIVED = (
    "index",
    "dedup",
    "tags",
    "concepts",
    "concept_edges",
    "concept_ancestors",
    "_cache",
    "catalog.duckdb",
)


@pytest.fixture(scope="module")
def at_once(grown, tmp_path_factory) -> Workspace:
    """The same shards (samples, signals, every model's embeddings, plans) with every global step
    done once, from nothing: what one run over all three sources computes. (Per-shard work is
    the same either way; a different sharding would change the CPU's float rounding in batched
    forwards, not the method.)"""
    from engine.graph.tagging import tag_workspace
    from engine.vectors.dedup import dedup_workspace
    from engine.vectors.index import build_index

    ws = Workspace(str(tmp_path_factory.mktemp("at_once") / "ws"))
    shutil.copytree(grown.root, ws.root, ignore=shutil.ignore_patterns(*DERIVED, "manifests", "_tmp"))
    for modality in ("image", "text"):
        build_index(ws, modality)
    dedup_workspace(ws)
    tag_workspace(ws, progress=False)
    from engine.catalog import refresh_catalog

    refresh_catalog(ws)
    return ws


def by_sample(ws: Workspace, table: str, columns: list[str]) -> pa.Table:
    return ws.read_table(table, ["sample_id", *columns]).sort_by([("sample_id", "ascending")])


def test_every_table_ends_the_same(grown, at_once):
    usable = "status = 'ok'"
    for ws in (grown, at_once):
        counts = run_sql(ws, f"SELECT count(*) AS n FROM samples WHERE {usable}").to_pylist()[0]["n"]
        assert counts == 8 + 8 + 4  # c's two identical records are duplicates of b's
    assert by_sample(grown, "signals", ["phash", "width"]).equals(
        by_sample(at_once, "signals", ["phash", "width"])
    )
    assert by_sample(grown, "embeddings", ["image_vec", "clip_score"]).equals(
        by_sample(at_once, "embeddings", ["image_vec", "clip_score"])
    )
    dedup = ["community_id", "is_representative", "nearest_id"]
    assert by_sample(grown, "dedup", dedup).equals(by_sample(at_once, "dedup", dedup))
    tags = ["concept_id", "source"]
    grown_tags = grown.read_table("tags", ["sample_id", *tags]).sort_by(
        [("sample_id", "ascending"), ("concept_id", "ascending")]
    )
    once_tags = at_once.read_table("tags", ["sample_id", *tags]).sort_by(
        [("sample_id", "ascending"), ("concept_id", "ascending")]
    )
    assert grown_tags.equals(once_tags)
    for ws in (grown, at_once):  # the index holds every usable sample once
        assert read_meta(ws, "image")["ntotal"] == 20


def test_near_duplicates_across_sources_share_a_community(grown):
    rows = run_sql(
        grown, "SELECT s.uri, d.community_id FROM samples s JOIN dedup d USING (sample_id)"
    ).to_pylist()
    community = {os.path.basename(r["uri"]): r["community_id"] for r in rows}
    assert community["a0.png"] == community["b6.png"]  # the same image, another caption
    assert community["a1.png"] == community["b7.png"]  # the half-size copy


def test_the_same_manifest_bytes(grown, at_once):
    from engine.curation.manifest import build_manifest
    from engine.curation.recipe import load_recipe

    paths = [build_manifest(ws, load_recipe("lowres"), seed=0).path for ws in (grown, at_once)]
    with open(paths[0], "rb") as first, open(paths[1], "rb") as second:
        assert first.read() == second.read()


def test_rerunning_an_unchanged_source_changes_nothing(grown, sources):
    before = {
        p: os.path.getmtime(p)
        for t in ("samples", "embeddings", "dedup", "tags")
        for p in grown.shard_files(t)
    }
    summary = curate(os.path.join(sources, "b"), grown)
    assert summary.shards_run == 0
    after = {
        p: os.path.getmtime(p)
        for t in ("samples", "embeddings", "dedup", "tags")
        for p in grown.shard_files(t)
    }
    assert after == before
    assert active_model(grown) is not None


def test_a_copy_of_the_workspace_keeps_working(grown, tmp_path):
    copy = Workspace(str(tmp_path / "copy"))
    shutil.copytree(grown.root, copy.root)
    assert run_sql(copy, "SELECT count(*) AS n FROM near_duplicates").num_rows == 1


def test_a_removed_source_is_gone_everywhere(grown, sources, tmp_path):
    from engine.curation.manifest import build_manifest
    from engine.curation.recipe import load_recipe
    from engine.vectors.index import load_index
    from pipelines.sources import find_source, remove_source

    ws = Workspace(str(tmp_path / "ws"))
    shutil.copytree(grown.root, ws.root, ignore=shutil.ignore_patterns("catalog.duckdb", "manifests", "_tmp"))
    folder = os.path.join(sources, "b")
    prefix = find_source(ws, folder).prefix
    summary = remove_source(ws, folder)
    assert summary.prefix == prefix and summary.samples_removed == 8
    for location in summary.rerun.values():  # c's copies of b's records count again once c is rerun
        curate(location, ws)
    assert not [s for t in ws.table_names() for s in ws.list_shards(t) if s.startswith(prefix + "-")]
    assert not ws.exists(ws.plan_rel(prefix))
    samples = run_sql(ws, "SELECT sample_id, uri FROM samples WHERE status = 'ok'").to_pylist()
    assert not [r for r in samples if r["uri"].startswith(folder + os.sep)]
    usable = {r["sample_id"] for r in samples}
    assert len(usable) == 8 + 6  # a, and c with its two records that were b's duplicates
    assert set(load_index(ws, "image").ids) == usable == set(ws.read_table("dedup")["sample_id"].to_pylist())
    assert set(ws.read_table("tags")["sample_id"].to_pylist()) <= usable
    manifest = build_manifest(ws, load_recipe("lowres"), seed=0)
    named = set(pq.read_table(manifest.path, columns=["sample_id"])["sample_id"].to_pylist())
    assert named and named <= usable


def test_a_file_rewritten_in_place_is_curated_again(sources, tmp_path):
    """Same path, other bytes: the rerun finds the stamp moved, drops that shard everywhere and
    ingests it again; the old pair is gone from every table, the new one is in."""
    from engine.vectors.index import load_index

    ws = Workspace(str(tmp_path / "ws"))
    folder = str(tmp_path / "a")
    shutil.copytree(os.path.join(sources, "a"), folder)
    curate(folder, ws)
    path = os.path.join(folder, "a3.png")
    old = run_sql(ws, "SELECT sample_id FROM samples WHERE uri = ?", [path]).to_pylist()[0]["sample_id"]
    with open(path, "wb") as f:
        f.write(png(load_original(openclipart_files(30, seed=11)[29])))
    summary = curate(folder, ws)
    assert summary.shards_run == 1  # only the shard holding a3.png
    new = run_sql(ws, "SELECT sample_id, status FROM samples WHERE uri = ?", [path]).to_pylist()
    assert len(new) == 1 and new[0]["sample_id"] != old and new[0]["status"] == "ok"
    for table in ("samples", "signals", "embeddings", "dedup", "tags"):
        assert old not in set(ws.read_table(table, ["sample_id"])["sample_id"].to_pylist())
    assert new[0]["sample_id"] in set(load_index(ws, "image").ids)
    assert curate(folder, ws).shards_run == 0  # and a third run has nothing to do
