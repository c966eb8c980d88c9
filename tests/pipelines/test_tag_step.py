"""Tagging as the last step of the curate job, with CLIP zero-shot tags from the embed stage."""

from __future__ import annotations

import pytest

from engine.catalog import run_sql
from engine.profiling.source import load_source
from engine.workspace import Workspace
from pipelines.curate import run_curate
from pipelines.stages import EmbedStage

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_curate_tags_captions_and_images(tmp_path):
    ws = Workspace(str(tmp_path / "ws"))
    summary = run_curate(
        load_source("openclipart"), ws, limit=96, shard_size=48, num_cpus=2, image_stages=[EmbedStage()]
    )
    tagging = summary.tagging
    assert tagging is not None and tagging.samples == summary.ok
    assert tagging.clip_skipped == "", tagging.clip_skipped
    assert tagging.by_source["caption"] > summary.ok  # several concepts per caption
    assert tagging.clip_precision >= 0.5 and tagging.by_source.get("clip", 0) > 0
    # the threshold beats taking every candidate (clip_top_k per image), and says what it rests on
    assert 0 < tagging.clip_candidates <= 5 * summary.ok
    assert tagging.clip_base_precision < tagging.clip_precision
    clip = run_sql(ws, "SELECT min(score) AS lo, count(*) AS n FROM tags WHERE source = 'clip'").to_pylist()[
        0
    ]
    assert clip["n"] == tagging.by_source["clip"] and clip["lo"] >= tagging.clip_threshold - 1e-6
    # every clip tag is one of the concepts the text tags use, and the views see it
    orphans = run_sql(
        ws,
        "SELECT count(*) AS n FROM tags t WHERE source = 'clip' AND concept_id NOT IN "
        "(SELECT concept_id FROM tags WHERE source <> 'clip')",
    ).to_pylist()
    assert orphans == [{"n": 0}]
    counts = run_sql(ws, "SELECT sum(n_clip) AS n FROM concept_counts").to_pylist()[0]["n"]
    assert counts > 0
    # a rerun of the finished job finds the tags up to date and does not redo them
    again = run_curate(
        load_source("openclipart"), ws, limit=96, shard_size=48, num_cpus=2, image_stages=[EmbedStage()]
    )
    assert again.tagging is None
