"""Tagging's per-shard passes on Ray actors give the bytes of the one-process run."""

from __future__ import annotations

import pytest

from engine.graph.tagging import tag_workspace
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
