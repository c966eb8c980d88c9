"""One shard task without Ray: a failure on one record stays with that record."""

from __future__ import annotations

import pyarrow.compute as pc

from engine.profiling.folder_source import FolderSource
from engine.profiling.ingest import IngestConfig
from engine.profiling.plan import plan_source
from engine.workspace import Workspace
from pipelines.curate import CurateShard
from tests.data import write_noise_folder


def test_a_profiler_crash_rejects_that_sample_only(tmp_path, monkeypatch):
    import pipelines.stages as stages

    folder = write_noise_folder(str(tmp_path / "src"), 4, size=(16, 16))
    real = stages.profile_image
    calls = []

    def flaky(image, info):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("profiler bug")
        return real(image, info)

    monkeypatch.setattr(stages, "profile_image", flaky)
    ws = Workspace(str(tmp_path / "ws")).create()
    source = FolderSource(folder, 2**30)
    plan = plan_source(ws, source, shard_size=10)
    assert CurateShard(ws, source, plan, IngestConfig())({"shard": 0})["ok"] == 3
    samples = ws.read_table("samples")
    bad = samples.filter(pc.equal(samples["status"], "rejected")).to_pylist()
    assert [(r["ref"], r["reject_reason"]) for r in bad] == [("00001.png", "internal_error")]
    assert bad[0]["reject_detail"] == "profile: ValueError: profiler bug"
    assert ws.read_table("signals").num_rows == 3
