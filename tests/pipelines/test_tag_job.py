"""Tagging's per-shard passes on Ray actors give the bytes of the one-process run."""

from __future__ import annotations

import shutil

import pytest

from engine.graph.tagging import tag_workspace
from engine.workspace import Workspace
from pipelines.tag_job import run_tag_job, use_ray
from tests.engine.graph.test_tagging import (
    HAND_WRITTEN,
    openclipart_captions,
    tag_files,
    write_caption_workspace,
    write_ocr_shard,
)

pytestmark = [pytest.mark.ray]


def test_tagging_on_ray_writes_what_one_process_writes(tmp_path):
    captions = openclipart_captions(300) + HAND_WRITTEN + ["a quibbleflux lamp on a desk"] * 6
    local = write_caption_workspace(str(tmp_path / "local"), captions, shard_size=40)
    on_ray = write_caption_workspace(str(tmp_path / "ray"), captions, shard_size=40)
    for ws in (local, on_ray):
        write_ocr_shard(ws)
    assert not use_ray(local)  # 9 shards: a local Ray would not pay for itself
    expected = tag_workspace(local, progress=False)
    summary = run_tag_job(on_ray, progress=False, num_cpus=2, on_ray=True)
    assert any("quibbleflux" in s for s in summary.mined)  # mined between the passes, used in the second
    for field in ("samples", "tagged_samples", "tags", "by_source", "mined", "shards_read", "shards_tagged"):
        assert getattr(summary, field) == getattr(expected, field), field
    files = tag_files(on_ray.root)
    assert files == tag_files(local.root) and len(files) > 9
    # a rerun on Ray finds every shard's tags still right and writes nothing
    again = run_tag_job(on_ray, progress=False, num_cpus=2, on_ray=True)
    assert again.shards_read == 0 and again.shards_tagged == 0 and tag_files(on_ray.root) == files


@pytest.mark.slow
def test_zero_shot_tags_on_ray_are_the_one_process_tags(tmp_path):
    """With image vectors (the embed stage on real openclipart images), the zero-shot search runs per
    shard on the actors too (the concept index sent once): same tags, same threshold."""
    from engine.profiling.source import load_source
    from pipelines.curate import run_curate
    from pipelines.stages import EmbedStage

    local = Workspace(str(tmp_path / "local"))
    curated = run_curate(
        load_source("openclipart"),
        local,
        limit=96,
        shard_size=32,
        num_cpus=2,
        image_stages=[EmbedStage()],
        tag=False,
    )
    assert curated.ok > 80
    on_ray = Workspace(shutil.copytree(local.root, str(tmp_path / "ray")))
    expected = tag_workspace(local, progress=False)
    summary = run_tag_job(on_ray, progress=False, num_cpus=2, on_ray=True)
    assert summary.clip_skipped == "" and summary.by_source.get("clip", 0) > 0
    assert summary.shards_searched == expected.shards_searched == len(local.list_shards("samples"))
    assert (summary.clip_threshold, summary.by_source) == (expected.clip_threshold, expected.by_source)
    assert tag_files(on_ray.root) == tag_files(local.root)
