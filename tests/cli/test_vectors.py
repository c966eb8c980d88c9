"""zcurate index / search / dedup: help, bad input, and a run over a small real workspace."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cli.main import app
from cli.vectors import dedup, index_cmd
from engine.catalog import run_sql
from engine.vectors.dedup import DedupConfig
from engine.vectors.index import IndexConfig
from engine.workspace import Workspace
from tests.engine.vectors.test_dedup import curate_folder
from tests.engine.vectors.test_index import unit, write_embeddings
from tests.neardup import load_original, openclipart_files, png

runner = CliRunner()


@pytest.mark.parametrize("command", ["index", "search", "dedup"])
def test_help_shows_an_example(command):
    result = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert f"Example: zcurate {command}" in result.output


def test_cli_defaults_are_the_library_defaults():
    def default(fn, name):
        return inspect.signature(fn).parameters[name].default

    config = DedupConfig()
    assert (default(dedup, "threshold"), default(dedup, "phash_distance"), default(dedup, "k")) == (
        config.threshold,
        config.phash_distance,
        config.k,
    )
    assert (default(index_cmd, "nprobe"), default(index_cmd, "exact_max")) == (
        IndexConfig().nprobe,
        IndexConfig().exact_max,
    )


def test_bad_input_gets_one_line_errors(tmp_path):
    ws = str(tmp_path / "ws")
    result = runner.invoke(app, ["index", "--workspace", ws])
    assert result.exit_code == 2 and "no embeddings" in result.output
    result = runner.invoke(app, ["dedup", "--workspace", ws])
    assert result.exit_code == 2 and "no samples" in result.output
    result = runner.invoke(app, ["search", "--workspace", ws])
    assert result.exit_code == 2 and "exactly one of --text or --image" in result.output
    result = runner.invoke(app, ["search", "--workspace", ws, "--text", "a cat"])
    assert result.exit_code == 2 and "no image index" in result.output


def test_index_then_dedup_on_a_workspace(tmp_path):
    folder = tmp_path / "pairs"
    folder.mkdir()
    for k, path in enumerate(openclipart_files(3, seed=5)):
        (folder / f"a{k}.png").write_bytes(png(load_original(path)))
        (folder / f"a{k}.txt").write_text(f"picture {k}")
    ws = Workspace(str(tmp_path / "ws"))
    curate_folder(str(folder), ws)
    ids = ws.read_table("signals")["sample_id"].to_pylist()
    vectors = unit(np.random.default_rng(0).standard_normal((3, 16)))
    vectors[1] = unit(vectors[0:1] + 0.01)[0]  # sample 1 is a near-copy of sample 0
    write_embeddings(ws, "x-0", vectors, "unused")
    shard = pq.read_table(ws.path("embeddings", "x-0.parquet"))
    shard = shard.set_column(0, "sample_id", pa.array(ids))
    ws.write_parquet("embeddings/x-0.parquet", shard)
    result = runner.invoke(app, ["index", "--workspace", ws.root], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "image: flat index of 3 vectors" in result.output
    result = runner.invoke(app, ["dedup", "--workspace", ws.root], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "1 duplicate communities" in result.output
    rows = run_sql(ws, "SELECT n_samples, sample_ids FROM near_duplicates").to_pylist()
    assert rows == [{"n_samples": 2, "sample_ids": sorted(ids[:2])}]
    first = Path(ws.path("dedup", "all.parquet")).read_bytes()
    assert runner.invoke(app, ["dedup", "--workspace", ws.root]).exit_code == 0
    assert Path(ws.path("dedup", "all.parquet")).read_bytes() == first  # same inputs: same bytes
