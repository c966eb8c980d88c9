"""One shard through the runner without Ray: a failure on one image stays with that image."""

from __future__ import annotations

import pyarrow.compute as pc
from PIL import Image

from engine.profiling.folder_source import FolderSource
from engine.profiling.plan import plan_source
from engine.workspace import Workspace
from tests.data import run_shards_here, write_noise_folder


def test_a_profiler_crash_rejects_that_sample_only(tmp_path, monkeypatch):
    import engine.profiling.profile as profile

    folder = write_noise_folder(str(tmp_path / "src"), 4, size=(16, 16))
    real = profile.profile_image
    with Image.open(f"{folder}/00001.png") as bad:
        bad_pixels = bad.convert("RGB").tobytes()

    def flaky(image, info):  # breaks on one image, wherever it comes in a batch
        if image.tobytes() == bad_pixels:
            raise ValueError("profiler bug")
        return real(image, info)

    monkeypatch.setattr(profile, "profile_image", flaky)
    ws = Workspace(str(tmp_path / "ws")).create()
    source = FolderSource(folder, 2**30)
    plan = plan_source(ws, source, shard_size=10)
    assert [result["ok"] for result in run_shards_here(ws, source, plan)] == [3]
    samples = ws.read_table("samples")
    bad = samples.filter(pc.equal(samples["status"], "rejected")).to_pylist()
    assert [(r["ref"], r["reject_reason"]) for r in bad] == [("00001.png", "internal_error")]
    assert bad[0]["reject_detail"] == "profile: ValueError: profiler bug"
    assert ws.read_table("signals").num_rows == 3
