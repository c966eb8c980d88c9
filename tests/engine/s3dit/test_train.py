"""The trainer on real openclipart manifests: it learns, it overfits one batch, it resumes
exactly, and it reports per-concept loss to the workspace."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute
import pytest
import torch

from engine.s3dit.concept_loss import read_feedback
from engine.s3dit.sample import load_for_sampling, sample_images
from engine.s3dit.train import TrainConfig, main
from engine.workspace import Workspace
from tests.engine.s3dit.manifests import write_manifest


def config(tmp_path, manifests: dict[str, str], **overrides) -> TrainConfig:
    base = {
        "workspace": str(tmp_path / "ws"),
        "stages": list(manifests),
        "manifests": manifests,
        "preset": "S3DiT-T/4",
        "steps": 6,
        "batch_size": 4,
        "lr": 1e-3,
        "warmup": 2,
        "feedback_every": 3,
        "checkpoint_every": 100,
        "progress": False,
    }
    return TrainConfig(**{**base, **overrides})


def test_resume_gives_identical_weights(tmp_path, clipart_rows):
    """2 stages x 4 steps in one go == stopped at step 6 (mid second stage) and run again."""
    lowres = write_manifest(str(tmp_path / "lowres.parquet"), clipart_rows[:12])
    sft = write_manifest(str(tmp_path / "sft.parquet"), clipart_rows[12:24], stage="sft")
    manifests = {"lowres": lowres, "sft": sft}
    whole = config(tmp_path / "a", manifests, steps=4)
    main(whole)
    parted = config(tmp_path / "b", manifests, steps=4)
    first = main(parted, stop_at=6)
    assert first["stopped"] and first["step"] == 6
    second = main(parted)
    assert second["step"] == 8
    a = torch.load(os.path.join(whole.run_dir, "checkpoints", "latest.pt"), weights_only=False)
    b = torch.load(os.path.join(parted.run_dir, "checkpoints", "latest.pt"), weights_only=False)
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), (key, name)
    assert a["step"] == b["step"] == 8


def test_concept_losses_are_reported_to_the_workspace(tmp_path, clipart_rows):
    path = write_manifest(str(tmp_path / "lowres.parquet"), clipart_rows[:16])
    cfg = config(tmp_path, {"lowres": path}, steps=6, feedback_every=3)
    summary = main(cfg)
    assert len(summary["feedback"]) == 2
    report = read_feedback(Workspace(cfg.workspace), "lowres")
    assert sorted(set(report["step"].to_pylist())) == [3, 6]
    concepts = {c for r in clipart_rows[:16] for c in r["concept_ids"]}
    assert report.schema.field("concept_id").type == pa.int64()
    assert set(report["concept_id"].to_pylist()) <= concepts
    per_step = report.group_by("step").aggregate([("samples", "sum")])
    assert per_step["samples_sum"].to_pylist() == [12, 12]  # 3 steps x 4 draws, one concept each
    assert all(np.isfinite(report["loss_mean"].to_numpy()))
    with open(os.path.join(cfg.run_dir, "log.csv")) as f:
        log = f.read().splitlines()
    assert log[0].startswith("step,stage") and len(log) == 7


def test_one_batch_overfits(tmp_path, clipart_rows):
    path = write_manifest(str(tmp_path / "one.parquet"), clipart_rows[:4], size=(16, 16))  # 16 tokens
    losses = []
    cfg = config(tmp_path, {"lowres": path}, steps=150, cap_dropout=0.0, warmup=10, feedback_every=1000)
    main(cfg, on_step=lambda row: losses.append(row["loss"]))
    first, last = np.mean(losses[:10]), np.mean(losses[-20:])
    assert last < 0.4 * first, (first, last)


@pytest.mark.slow
def test_loss_falls_on_openclipart_at_32px_and_sampling_works(tmp_path, clipart_rows):
    path = write_manifest(str(tmp_path / "lowres.parquet"), clipart_rows)  # 64 images, 8 concepts
    losses = []
    cfg = config(tmp_path, {"lowres": path}, steps=240, batch_size=8, warmup=20, feedback_every=60)
    main(cfg, on_step=lambda row: losses.append(row["loss"]))
    first, last = np.mean(losses[:20]), np.mean(losses[-40:])
    assert last < 0.6 * first, (first, last)
    loaded = load_for_sampling(os.path.join(cfg.run_dir, "checkpoints", "latest.pt"))
    a = sample_images(loaded, ["a red apple", "a car"], steps=8, cfg=4.0, seed=0, height=32, width=32)
    b = sample_images(loaded, ["a red apple", "a car"], steps=8, cfg=4.0, seed=0, height=32, width=32)
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b)


def test_resume_across_a_stage_boundary(tmp_path, clipart_rows):
    lowres = write_manifest(str(tmp_path / "lowres.parquet"), clipart_rows[:8])
    sft = write_manifest(str(tmp_path / "sft.parquet"), clipart_rows[8:20], stage="sft")
    manifests = {"lowres": lowres, "sft": sft}
    whole = config(tmp_path / "a", manifests, steps=3)
    main(whole)
    parted = config(tmp_path / "b", manifests, steps=3)
    assert main(parted, stop_at=3)["stopped"]
    main(parted)
    a = torch.load(os.path.join(whole.run_dir, "checkpoints", "latest.pt"), weights_only=False)
    b = torch.load(os.path.join(parted.run_dir, "checkpoints", "latest.pt"), weights_only=False)
    assert all(torch.equal(t, b["model"][k]) for k, t in a["model"].items())


def test_a_newer_manifest_in_the_stage_folder_reweights_the_next_epoch(tmp_path, clipart_rows):
    """The loop with the engine: after a feedback report the trainer looks for a newer manifest
    in the stage's folder and samples the next epoch by its weights."""
    folder = tmp_path / "manifests" / "lowres"
    folder.mkdir(parents=True)
    kept, dropped = 101, 102
    rows = [{**r, "concept_ids": [kept if i % 2 else dropped]} for i, r in enumerate(clipart_rows[:16])]
    write_manifest(str(folder / "v1.parquet"), rows)

    def engine_answers(row):  # stands in for issue 6's feedback step: zero the "dropped" concept
        if row["step"] == 1:
            weights = [1.0 if r["concept_ids"] == [kept] else 0.0 for r in rows]
            write_manifest(str(folder / "v2.parquet"), rows, weights=weights)

    cfg = config(tmp_path, {"lowres": str(folder)}, steps=8, feedback_every=2)
    summary = main(cfg, on_step=engine_answers)
    assert summary["refreshed"] == [str(folder / "v2.parquet")]
    report = read_feedback(Workspace(cfg.workspace), "lowres")
    epoch_one = report.filter(pa.compute.less_equal(report["step"], 4))
    later = report.filter(pa.compute.greater(report["step"], 4))
    assert set(epoch_one["concept_id"].to_pylist()) == {kept, dropped}  # 16 rows, 4 steps of 4
    assert set(later["concept_id"].to_pylist()) == {kept}


@pytest.mark.ray
def test_feedback_rebuilds_the_engine_manifest_and_its_sidecar_shows_it(tmp_path, curated_ws):
    """The whole loop with the real engine: a manifest built by engine.manifest, per-concept loss
    reports, and the stage's manifest rebuilt after each one with the report in its sidecar."""
    import json

    from engine.curation.manifest import build_manifest
    from engine.curation.recipe import load_recipe
    from tests.curated import copy_workspace

    ws = copy_workspace(curated_ws, str(tmp_path / "ws"))
    recipe = load_recipe("lowres", {"buckets.sizes": [[32, 32]], "feedback.min_samples": 1})
    first = build_manifest(ws, recipe, seed=0)
    cfg = config(tmp_path, {"lowres": first.path}, steps=6, feedback_every=3, workspace=ws.root)
    summary = main(cfg)
    assert len(summary["feedback"]) == 2 and len(summary["refreshed"]) == 2
    newest = summary["refreshed"][-1]
    assert newest != first.path and os.path.dirname(newest) == os.path.dirname(first.path)
    with open(newest.removesuffix(".parquet") + ".json") as f:
        sidecar = json.load(f)
    assert sidecar["feedback"]["reports"] == 2 and sidecar["feedback"]["concepts"] > 0
    assert sidecar["feedback_fingerprint"] != first.sidecar["feedback_fingerprint"]
    reported = read_feedback(ws, "lowres")["concept_id"]
    assert reported.type == pa.int64() and reported.drop_null().to_pylist()  # the graph's int64 ids
