"""The quality and nudity image stages through the curate job's runner (no Ray): their columns in
the catalog's ``signals`` view, a workspace curated before them (nulls, then a backfill), and a
recipe that filters on ``brisque``."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from engine.catalog import refresh_catalog, run_sql
from engine.curation.manifest import build_manifest
from engine.curation.recipe import load_recipe, parse_recipe
from engine.profiling.folder_source import FolderSource
from engine.profiling.ingest import IngestConfig
from engine.profiling.plan import plan_source, save_source_config
from engine.workspace import Workspace
from pipelines.backfill import pending_shards
from pipelines.runner import ShardRunner
from pipelines.stages import IMAGE_STAGES, NudityStage, QualityStage, build_image_stages, default_stage_names
from tests.data import run_shards_here
from tests.openclipart import heldout_pairs, write_pair_folder

NEW_COLUMNS = ("brisque", "piqe", "nsfw_nudenet")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    return write_pair_folder(str(tmp_path_factory.mktemp("src")), heldout_pairs(24)[:6])


def curate(root: str, folder: str, stages) -> Workspace:
    ws = Workspace(root).create()
    source = FolderSource(folder, 2**30)
    plan = plan_source(ws, source, shard_size=4)
    save_source_config(ws, source, IngestConfig())
    run_shards_here(ws, source, plan, stages)
    refresh_catalog(ws)
    return ws


def new_columns(ws: Workspace) -> list[dict]:
    return run_sql(ws, f"SELECT {', '.join(NEW_COLUMNS)} FROM signals ORDER BY sample_id").to_pylist()


def test_the_stages_are_image_stages_and_nudity_is_opt_in():
    assert IMAGE_STAGES["quality"] is QualityStage and IMAGE_STAGES["nudity"] is NudityStage
    assert "quality" in default_stage_names() and "nudity" not in default_stage_names()
    built = build_image_stages(["quality", "nudity"], device="cpu")
    assert [s.table for s in built] == ["quality", "nudity"] and built[1].num_gpus == 0


def test_a_curate_run_writes_the_columns_into_signals(tmp_path, folder):
    ws = curate(str(tmp_path / "ws"), folder, [QualityStage(), NudityStage()])
    rows = new_columns(ws)
    assert len(rows) == 6
    assert all(r["brisque"] is not None and 0 <= r["piqe"] <= 100 for r in rows)
    assert all(0 <= r["nsfw_nudenet"] <= 1 for r in rows)
    assert ws.list_shards("quality") == ws.list_shards("nudity") == ws.list_shards("samples")


def test_a_workspace_curated_before_reads_nulls_then_backfills(tmp_path, folder):
    ws = curate(str(tmp_path / "old"), folder, [])  # as curated before the stages existed
    assert all(v is None for r in new_columns(ws) for v in r.values())
    recipe = load_recipe("lowres", {"balance.method": "none", "filters.brisque.max": 40.0})
    before = build_manifest(ws, recipe, seed=0).sidecar
    assert any("filter brisque: the column is null for every sample" in w for w in before["warnings"])

    for stage in (QualityStage(), NudityStage()):  # what `zcurate curate ... --stages quality,nudity` runs
        items, sources, _ = pending_shards(ws, stage.table)
        assert len(items) == 2
        runner = ShardRunner(ws, sources, [stage], backfill=True)
        for item in items:
            runner(item)
        assert pending_shards(ws, stage.table)[0] == []
    refresh_catalog(ws)
    rows = new_columns(ws)
    assert all(r["brisque"] is not None and r["nsfw_nudenet"] is not None for r in rows)

    after = build_manifest(ws, recipe, seed=0)  # the new tables are inputs: a new manifest id
    assert after.manifest_id != before["manifest_id"] and not after.cached
    assert not any("brisque" in w for w in after.sidecar["warnings"])
    counts = {c["filter"]: c for c in after.sidecar["counts"]["filters"]}
    assert counts["brisque"]["missing"] == 0
    manifest = pq.read_table(after.path)
    assert manifest.num_rows and max(manifest["brisque"].to_pylist()) <= 40.0  # the recipe's column


def test_the_docs_recipe_examples_use_the_columns():
    """The TOML examples of docs/engines/profiling.md that name the new columns are valid recipes."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "engines" / "profiling.md").read_text()
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", page, re.S) if "brisque" in b or "nudenet" in b]
    assert len(blocks) == 2
    for block in blocks:
        recipe = parse_recipe({"stage": "docs", **tomllib.loads(block)}, "docs example")
        assert set(recipe.columns()) & set(NEW_COLUMNS)
