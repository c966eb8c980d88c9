"""The image stage framework without Ray: curate shards, backfill, duplicates, the catalog join.

``MeanColourStage`` is a real (tiny) image stage written for these tests: it follows the same
protocol as OCR or embedding (``pipelines.stages``), so the framework is tested without a model.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest

from engine import schema
from engine.catalog import refresh_catalog, run_sql
from engine.profiling.folder_source import FolderSource
from engine.profiling.image_batch import batch_images
from engine.profiling.ingest import IngestConfig
from engine.profiling.plan import plan_source, save_source_config
from engine.workspace import Workspace
from pipelines.backfill import pending_shards
from pipelines.curate import mark_duplicate_rows
from pipelines.runner import ShardRunner
from pipelines.stages import build_image_stages
from tests.data import noise_image, run_shards_here, write_noise_folder

MEAN_COLOUR = pa.schema([("sample_id", pa.string()), ("image_id", pa.string()), ("mean_red", pa.float32())])


@dataclass
class MeanColourStage:
    name: str = "mean_colour"
    table: str = "mean_colour"
    schema: pa.Schema = MEAN_COLOUR
    num_cpus: float = 1
    num_gpus: float = 0
    reads: tuple[str, ...] = ("sample_id", "image_id", "pixels")
    writes: tuple[str, ...] = ("mean_red",)
    required: bool = False
    images_seen: int = 0

    def setup(self) -> None:
        pass

    def __call__(self, batch: pa.Table) -> pa.Table:
        images, image_of_row = batch_images(batch)
        self.images_seen += len(images)
        red = [float(np.asarray(image)[..., 0].mean()) for image in images]
        return pa.table(
            {
                "sample_id": batch["sample_id"],
                "image_id": batch["image_id"],
                "mean_red": pa.array([red[i] for i in image_of_row], pa.float32()),
            },
            schema=MEAN_COLOUR,
        )


@pytest.fixture(autouse=True)
def mean_colour_table(monkeypatch):
    monkeypatch.setitem(schema.TABLES, "mean_colour", MEAN_COLOUR)
    monkeypatch.setitem(schema.SIGNAL_COLUMNS, "mean_colour", ("mean_red",))


def curate_folder(tmp_path, folder: str, shard_size: int, stages=()) -> tuple[Workspace, FolderSource]:
    ws = Workspace(str(tmp_path / "ws")).create()
    source = FolderSource(folder, 2**30)
    plan = plan_source(ws, source, shard_size=shard_size)
    save_source_config(ws, source, IngestConfig())
    run_shards_here(ws, source, plan, stages)
    return ws, source


def test_stage_rows_are_the_usable_samples_in_order(tmp_path):
    folder = write_noise_folder(str(tmp_path / "src"), 5, size=(16, 16))
    with open(os.path.join(folder, "00005.png"), "wb") as f:
        f.write(b"not a png")  # rejected: gets no stage row
    with open(os.path.join(folder, "00005.txt"), "w") as f:
        f.write("broken")
    ws, _ = curate_folder(tmp_path, folder, shard_size=3, stages=[MeanColourStage()])
    refresh_catalog(ws)
    signals = run_sql(ws, "SELECT sample_id, mean_red FROM signals ORDER BY sample_id").to_pylist()
    usable = run_sql(ws, "SELECT sample_id FROM samples WHERE status = 'ok' ORDER BY sample_id").to_pylist()
    assert [r["sample_id"] for r in signals] == [r["sample_id"] for r in usable]
    assert len(signals) == 5 and all(0 < r["mean_red"] < 255 for r in signals)
    assert ws.list_shards("mean_colour") == ws.list_shards("samples")


def test_backfill_fills_the_shards_that_lack_a_stage_with_the_same_rows(tmp_path):
    folder = write_noise_folder(str(tmp_path / "src"), 5, size=(16, 16))
    ws, _ = curate_folder(tmp_path, folder, shard_size=2)  # without the stage
    items, sources, finished = pending_shards(ws, "mean_colour")
    assert finished == 3 and [i["shard"] for i in items] == [0, 1, 2]
    os.remove(os.path.join(folder, "00004.png"))  # gone since curation: skipped and counted
    worker = ShardRunner(ws, sources, [MeanColourStage()], backfill=True)
    results = [worker(item) for item in items]
    assert [r["rows"] for r in results] == [2, 2, 0] and results[2]["changed"] == 1
    assert pending_shards(ws, "mean_colour")[0] == []  # a rerun has nothing to do

    direct = Workspace(str(tmp_path / "direct"))
    shutil.copytree(ws.root, direct.root)
    for shard_id in direct.list_shards("mean_colour"):
        os.remove(direct.path("mean_colour", f"{shard_id}.parquet"))
    noise_image(1004, (16, 16)).save(os.path.join(folder, "00004.png"))
    sources_again = pending_shards(direct, "mean_colour")[1]
    for item in pending_shards(direct, "mean_colour")[0]:
        ShardRunner(direct, sources_again, [MeanColourStage()], backfill=True)(item)
    assert direct.read_table("mean_colour").num_rows == 5


def test_cross_shard_duplicates_lose_their_stage_rows(tmp_path):
    folder = write_noise_folder(str(tmp_path / "src"), 3, size=(16, 16))
    for ext in ("png", "txt"):  # the same pair again, in the second shard
        shutil.copy(os.path.join(folder, f"00000.{ext}"), os.path.join(folder, f"00003.{ext}"))
    ws, _ = curate_folder(tmp_path, folder, shard_size=2, stages=[MeanColourStage()])
    assert ws.read_table("mean_colour").num_rows == 4
    assert mark_duplicate_rows(ws) == 1
    stage_ids = set(ws.read_table("mean_colour")["sample_id"].to_pylist())
    signal_ids = set(ws.read_table("signals")["sample_id"].to_pylist())
    assert stage_ids == signal_ids and len(stage_ids) == 3


def test_unknown_stage_names_are_one_clear_error():
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        build_image_stages(["nope"])


def test_an_image_with_several_captions_is_worked_on_once(tmp_path):
    """One image with three captions in a shard: three stage rows, one image handed to the stage."""
    folder = write_noise_folder(str(tmp_path / "src"), 2, size=(16, 16))
    for i, caption in enumerate(("a second caption", "a third caption")):
        shutil.copy(os.path.join(folder, "00000.png"), os.path.join(folder, f"00000-{i}.png"))
        with open(os.path.join(folder, f"00000-{i}.txt"), "w") as f:
            f.write(caption)
    stage = MeanColourStage()
    ws, _ = curate_folder(tmp_path, folder, shard_size=10, stages=[stage])
    rows = ws.read_table("mean_colour").to_pylist()
    assert len(rows) == 4 and stage.images_seen == 2
    assert len({r["mean_red"] for r in rows if r["image_id"] == rows[0]["image_id"]}) == 1
