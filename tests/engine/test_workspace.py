"""Workspace table I/O, shard plans and the DuckDB catalog, on real files (no Ray)."""

from __future__ import annotations

import os

import duckdb
import pyarrow as pa
import pytest

from engine import schema
from engine.catalog import dataset_stats, refresh_catalog, run_sql
from engine.profiling.folder_source import FolderSource
from engine.profiling.plan import plan_source, read_shard_rows
from engine.workspace import Workspace
from pipelines.curate import mark_duplicate_rows
from tests.data import run_shards_here, write_noise_folder


def sample_rows(n: int, shard_id: str) -> pa.Table:
    rows = [
        {
            "sample_id": f"{shard_id}-{i}",
            "image_id": f"img{i}",
            "source": "/src",
            "source_kind": "folder",
            "shard_id": shard_id,
            "row_index": i,
            "ref": f"r{i}",
            "uri": f"/src/r{i}",
            "caption": "c",
            "status": "ok",
            "reject_reason": None,
            "reject_detail": None,
            "warnings": [],
        }
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=schema.SAMPLES)


@pytest.mark.parametrize("uri", [False, True])
def test_write_and_read_shards(tmp_path, uri):
    root = f"file://{tmp_path}/ws" if uri else str(tmp_path / "ws")
    ws = Workspace(root).create()
    assert ws.list_shards("samples") == []
    assert ws.read_table("samples").schema == schema.SAMPLES  # empty, typed
    ws.write_shard("samples", "folder-abc-000001", sample_rows(3, "folder-abc-000001"))
    ws.write_shard("samples", "folder-abc-000000", sample_rows(2, "folder-abc-000000"))
    assert ws.list_shards("samples") == ["folder-abc-000000", "folder-abc-000001"]
    assert ws.read_table("samples").num_rows == 5
    assert ws.read_shard("samples", "folder-abc-000001")["row_index"].to_pylist() == [0, 1, 2]
    # nothing half-written is left behind, and _tmp never shows up as a table
    assert os.listdir(tmp_path / "ws" / "_tmp") == []


def test_a_half_written_file_is_never_listed(tmp_path):
    ws = Workspace(str(tmp_path)).create()
    os.makedirs(tmp_path / "samples")
    (tmp_path / "samples" / "x.parquet.partial").write_bytes(b"junk")
    (tmp_path / "_tmp").mkdir(exist_ok=True)
    (tmp_path / "_tmp" / "abc-folder-1.parquet").write_bytes(b"junk")  # a killed writer's leftovers
    assert ws.list_shards("samples") == []
    assert ws.read_table("samples").num_rows == 0


def test_writes_are_deterministic(tmp_path):
    a, b = Workspace(str(tmp_path / "a")).create(), Workspace(str(tmp_path / "b")).create()
    for ws in (a, b):
        ws.write_shard("samples", "s", sample_rows(10, "s"))
    assert (tmp_path / "a/samples/s.parquet").read_bytes() == (tmp_path / "b/samples/s.parquet").read_bytes()


def test_workspace_pickles_without_its_filesystem(tmp_path):
    import pickle

    ws = Workspace(str(tmp_path))
    ws.fs  # noqa: B018 - open it
    clone = pickle.loads(pickle.dumps(ws))
    assert clone.root == ws.root and clone._fs is None


def test_plan_is_saved_reused_and_extended(tmp_path):
    folder = write_noise_folder(str(tmp_path / "src"), 10, size=(8, 8))
    ws = Workspace(str(tmp_path / "ws"))
    source = FolderSource(folder, 2**30)
    first = plan_source(ws, source, shard_size=3, limit=4)
    assert (first.shard_count, first.record_count, first.added_records) == (2, 4, 4)
    again = plan_source(ws, source, shard_size=5, limit=4)
    assert (again.shard_count, again.added_records) == (2, 0)
    grown = plan_source(ws, source, shard_size=3)
    assert (grown.shard_count, grown.record_count, grown.added_records) == (4, 10, 6)
    refs = [r for i in range(grown.shard_count) for r in read_shard_rows(ws, grown, i)["ref"].to_pylist()]
    assert refs == sorted(refs) and len(refs) == len(set(refs)) == 10  # no record twice, none lost
    assert read_shard_rows(ws, grown, 0)["ref"].to_pylist() == ["00000.png", "00001.png", "00002.png"]


def test_shard_task_and_cross_shard_duplicates(tmp_path):
    folder = write_noise_folder(str(tmp_path / "src"), 6, size=(16, 16))
    # 00005 repeats 00001 exactly (same bytes and caption), in another shard
    (tmp_path / "src/00005.png").write_bytes((tmp_path / "src/00001.png").read_bytes())
    (tmp_path / "src/00005.txt").write_text((tmp_path / "src/00001.txt").read_text())
    ws = Workspace(str(tmp_path / "ws")).create()
    source = FolderSource(folder, 2**30)
    plan = plan_source(ws, source, shard_size=3)
    assert [result["ok"] for result in run_shards_here(ws, source, plan)] == [3, 3]
    assert mark_duplicate_rows(ws) == 1
    assert mark_duplicate_rows(ws) == 0  # idempotent: a rerun finds nothing left to do
    samples = ws.read_table("samples")
    rejected = samples.filter(pa.compute.equal(samples["status"], "rejected")).to_pylist()
    assert [(r["ref"], r["reject_reason"]) for r in rejected] == [("00005.png", "duplicate_sample")]
    assert rejected[0]["reject_detail"] == f"same image and caption as {plan.shard_id(0)}:1"
    assert len(set(samples["sample_id"].to_pylist())) == 6
    signals = ws.read_table("signals")
    assert signals.num_rows == 5 and len(set(signals["sample_id"].to_pylist())) == 5


def test_catalog_views(tmp_path):
    folder = write_noise_folder(str(tmp_path / "src"), 4, size=(16, 16))
    (tmp_path / "src/bad.png").write_bytes(b"")
    (tmp_path / "src/bad.txt").write_text("empty file")
    ws = Workspace(str(tmp_path / "ws")).create()
    assert refresh_catalog(ws) == str(tmp_path / "ws/catalog.duckdb")
    assert run_sql(ws, "SELECT count(*) AS n FROM samples").to_pylist() == [{"n": 0}]  # typed empty tables
    source = FolderSource(folder, 2**30)
    plan = plan_source(ws, source, shard_size=2)
    run_shards_here(ws, source, plan)
    refresh_catalog(ws)
    assert run_sql(ws, "SELECT count(*) AS n FROM sample_signals").to_pylist() == [{"n": 4}]
    assert run_sql(ws, "SELECT * FROM reject_reasons").to_pylist() == [
        {"reject_reason": "empty_file", "n": 1}
    ]
    assert run_sql(ws, "SELECT count(*) AS n FROM samples WHERE status = ?", ["ok"]).to_pylist() == [{"n": 4}]
    # the catalog file works on its own, as `duckdb WS/catalog.duckdb` would open it
    con = duckdb.connect(str(tmp_path / "ws/catalog.duckdb"), read_only=True)
    assert con.sql("SELECT count(*) FROM signals").fetchall() == [(4,)]
    con.close()
    stats = dataset_stats(ws)
    assert stats["totals"] == {"samples": 5, "ok": 4, "rejected": 1, "distinct_images": 4}
    assert {s["signal"] for s in stats["signals"]} >= {"blur", "entropy", "width"}


def test_catalog_is_read_only(tmp_path):
    ws = Workspace(str(tmp_path)).create()
    refresh_catalog(ws)
    with pytest.raises(duckdb.Error):
        run_sql(ws, "CREATE TABLE x (a INT)")


def test_a_moved_workspace_rebuilds_its_catalog(tmp_path):
    import shutil

    folder = write_noise_folder(str(tmp_path / "src"), 3, size=(16, 16))
    ws = Workspace(str(tmp_path / "ws")).create()
    source = FolderSource(folder, 2**30)
    plan = plan_source(ws, source, shard_size=5)
    run_shards_here(ws, source, plan)
    refresh_catalog(ws)
    shutil.move(str(tmp_path / "ws"), str(tmp_path / "moved"))
    moved = Workspace(str(tmp_path / "moved"))
    assert run_sql(moved, "SELECT count(*) AS n FROM samples").to_pylist() == [{"n": 3}]
    assert run_sql(moved, "SELECT workspace_root FROM zcurate_catalog").to_pylist() == [
        {"workspace_root": str(tmp_path / "moved")}
    ]
