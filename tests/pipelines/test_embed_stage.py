"""The embed and safety stages: by hand, inside the curate job, and alone via `zcurate embed`."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from engine.catalog import run_sql
from engine.profiling.folder_source import FolderSource
from engine.profiling.ingest import IngestConfig
from engine.vectors.embedder import vectors
from engine.workspace import Workspace
from pipelines.curate import run_curate
from pipelines.stages import EmbedStage, SafetyStage
from tests.data import image_batch
from tests.openclipart import heldout_pairs, write_pair_folder

ZCURATE = os.path.join(os.path.dirname(sys.executable), "zcurate")


@pytest.fixture(scope="module")
def embed_stage():
    stage = EmbedStage(batch_size=4)
    stage.setup()
    return stage


def test_embed_stage_rows_vectors_and_scores(embed_stage, monkeypatch):
    pairs = heldout_pairs(24)[:6]
    _, image_id, _, image = pairs[0]
    odd = Image.new("RGB", (7, 5))
    real = embed_stage._embedder.preprocess

    def preprocess(picture):  # one image the model cannot take: a null vector, no exception
        if picture.size == odd.size:
            raise ValueError("cannot preprocess")
        return real(picture)

    monkeypatch.setattr(embed_stage._embedder, "preprocess", preprocess)
    batch = image_batch(
        [*pairs, ("again", image_id, "another caption", image), ("broken", "bad-image", "a caption", odd)]
    )  # "again": the same image with a new caption
    table = embed_stage(batch)
    assert table.schema == embed_stage.schema
    assert table["sample_id"].to_pylist() == [p[0] for p in pairs] + ["again", "broken"]
    assert len(set(table["model_id"].to_pylist())) == 1
    ok = table.slice(0, 7)
    image_vecs, text_vecs = vectors(ok["image_vec"]), vectors(ok["text_vec"])
    np.testing.assert_allclose(np.linalg.norm(image_vecs, axis=1), 1, atol=2e-3)  # float16
    np.testing.assert_array_equal(image_vecs[0], image_vecs[6])
    cosines = np.sum(image_vecs * text_vecs, axis=1)
    np.testing.assert_allclose(ok["clip_score"].to_numpy(), cosines, atol=3e-3)
    broken = table.slice(7).to_pylist()[0]
    assert broken["image_vec"] is None and broken["clip_score"] is None and broken["text_vec"] is not None


def test_an_empty_batch_gives_an_empty_table(embed_stage):
    table = embed_stage(image_batch([]))
    assert table.num_rows == 0 and table.schema == embed_stage.schema


@pytest.mark.ray
@pytest.mark.slow
def test_curate_with_embed_and_safety_then_embed_alone_gives_the_same_rows(tmp_path):
    folder = write_pair_folder(str(tmp_path / "pairs"), heldout_pairs(24)[:8])
    ws = Workspace(str(tmp_path / "ws"))
    source = FolderSource(folder, 2**30)
    run_curate(
        source, ws, IngestConfig(), shard_size=4, num_cpus=2, image_stages=[EmbedStage(), SafetyStage()]
    )
    signals = run_sql(ws, "SELECT sample_id, clip_score, nsfw_score FROM signals ORDER BY sample_id")
    assert signals.num_rows == 8
    assert all(-1 <= s <= 1 for s in signals["clip_score"].to_pylist())
    assert all(0 <= s <= 1 for s in signals["nsfw_score"].to_pylist())
    first = ws.read_table("embeddings").sort_by("sample_id")

    for shard_id in ws.list_shards("embeddings"):
        os.remove(ws.shard_path("embeddings", shard_id))
    result = subprocess.run(
        [ZCURATE, "embed", "--workspace", ws.root, "--num-cpus", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 of 2 shards filled" in result.stdout
    again = ws.read_table("embeddings").sort_by("sample_id")
    assert again.equals(first)  # the same vectors, byte for byte, computed alone
    rerun = subprocess.run(
        [ZCURATE, "embed", "--workspace", ws.root], capture_output=True, text=True, timeout=600
    )
    assert "0 of 2 shards filled" in rerun.stdout  # only what is missing


def test_embed_command_errors_are_one_line(tmp_path):
    result = subprocess.run(
        [ZCURATE, "embed", "--workspace", str(tmp_path), "--model", "nonsense"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "use ARCH@TAG" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["embed", "safety", "train-embedder"])
def test_commands_show_an_example(command):
    from typer.testing import CliRunner

    from cli.main import app

    result = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert f"Example: zcurate {command}" in result.output


def test_the_catalog_builds_before_and_after_the_first_embeddings_shard(tmp_path, embed_stage):
    from engine.catalog import refresh_catalog

    ws = Workspace(str(tmp_path / "ws")).create()
    refresh_catalog(ws)  # no shards yet: empty float16 vector columns must still make a view
    assert run_sql(ws, "SELECT * FROM embeddings").num_rows == 0
    _, image_id, caption, image = heldout_pairs(24)[0]
    ws.write_shard("embeddings", "x-0", embed_stage(image_batch([("s", image_id, caption, image)])))
    refresh_catalog(ws)
    row = run_sql(ws, "SELECT len(image_vec) AS n, clip_score FROM embeddings").to_pylist()[0]
    assert row["n"] == 256 and -1 <= row["clip_score"] <= 1
