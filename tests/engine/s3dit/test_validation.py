"""The held-out validation loss: fixed terms (same model, same score, whatever the row order), a
caption gap that is exactly 0 for a model that ignores text and positive for one trained on
matched captions, unreadable rows left out and named, a --val-fraction slice that is never trained
on, and the trainer's val.csv (and TensorBoard) written before the first step, every --val-every
steps and at the end."""

from __future__ import annotations

import csv
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from engine.curation.manifest import ManifestError
from engine.s3dit.conditioning import PixelLatents, TextEncoder
from engine.s3dit.data import read_manifest
from engine.s3dit.holdout import held_out_rows, training_rows
from engine.s3dit.model import build_model
from engine.s3dit.sample import load_for_sampling
from engine.s3dit.train import TrainConfig, main
from engine.s3dit.validation import load_validation, validation_loss, wrong_caption_order
from tests.engine.s3dit.manifests import write_manifest


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder()


def test_every_row_gets_a_different_caption():
    captions = ["a", "a", "b", "c", "a"]
    order = wrong_caption_order(captions)
    assert all(captions[j] != captions[i] for i, j in enumerate(order))
    with pytest.raises(ManifestError, match="two different captions"):
        wrong_caption_order(["same", "same"])


def test_same_model_same_score_whatever_the_row_order(tmp_path, clipart_rows, encoder):
    path = write_manifest(str(tmp_path / "val.parquet"), clipart_rows[:10])
    reversed_path = str(tmp_path / "reversed.parquet")
    table = pq.read_table(path)
    pq.write_table(table.take(list(range(table.num_rows))[::-1]), reversed_path)
    torch.manual_seed(0)
    model = build_model("S3DiT-T/4", 3, encoder.dim)
    a = validation_loss(model, load_validation(path, encoder, PixelLatents(), timesteps=3))
    b = validation_loss(model, load_validation(reversed_path, encoder, PixelLatents(), timesteps=3))
    assert a == b
    assert len(a["val_loss_by_t"]) == 3 and a["val_loss"] > 0
    assert a["val_gap"] == pytest.approx(a["val_loss_wrong_caption"] - a["val_loss"])


class IgnoresText(torch.nn.Module):
    """A velocity model that never reads the caption."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x, t, cond):
        return self.conv(x) * t[:, None, None, None]


def test_a_model_that_ignores_text_has_no_caption_gap(tmp_path, clipart_rows, encoder):
    vset = load_validation(
        write_manifest(str(tmp_path / "val.parquet"), clipart_rows[:8]), encoder, PixelLatents()
    )
    scores = validation_loss(IgnoresText(), vset)
    assert scores["val_gap"] == 0.0 and scores["val_loss"] > 0


def test_unreadable_images_are_left_out_and_named(tmp_path, clipart_rows, encoder):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    rows = [*clipart_rows[:4], {**clipart_rows[4], "sample_id": "broken", "uri": str(broken)}]
    vset = load_validation(write_manifest(str(tmp_path / "val.parquet"), rows), encoder, PixelLatents())
    assert vset.images == 4 and vset.unreadable == ["broken"]
    only_broken = write_manifest(str(tmp_path / "bad.parquet"), rows[4:])
    with pytest.raises(ManifestError, match="fewer than two readable images"):
        load_validation(only_broken, encoder, PixelLatents())


def test_the_trainer_scores_the_validation_set_into_val_csv(tmp_path, clipart_rows):
    train = write_manifest(str(tmp_path / "lowres.parquet"), clipart_rows[:16])
    val = write_manifest(str(tmp_path / "val.parquet"), clipart_rows[48:56])
    cfg = TrainConfig(
        workspace=str(tmp_path / "ws"),
        stages=["lowres"],
        manifests={"lowres": train},
        preset="S3DiT-T/4",
        steps=5,
        batch_size=4,
        warmup=1,
        checkpoint_every=100,
        progress=False,
        val_manifest=val,
        val_every=2,
        val_timesteps=2,
    )
    summary = main(cfg)
    steps = [row["step"] for row in summary["validation"]]
    assert steps == [0, 2, 4, 5]
    with open(os.path.join(cfg.run_dir, "val.csv"), newline="") as f:
        logged = list(csv.DictReader(f))
    assert [int(r["step"]) for r in logged] == steps
    assert float(logged[-1]["val_loss"]) == pytest.approx(summary["validation"][-1]["val_loss"])
    assert summary["validation"][-1]["val_loss"] < summary["validation"][0]["val_loss"]
    with open(os.path.join(cfg.run_dir, "log.csv"), newline="") as f:  # beside the steps in log.csv too
        in_log = [r for r in csv.DictReader(f) if r["val_loss"]]
    assert [int(r["step"]) for r in in_log] == steps and all(r["loss"] == "" for r in in_log)
    assert float(in_log[-1]["val_gap"]) == pytest.approx(summary["validation"][-1]["val_gap"])


def test_bad_validation_settings_fail_before_training(tmp_path, clipart_rows):
    train = write_manifest(str(tmp_path / "lowres.parquet"), clipart_rows[:8])
    cfg = TrainConfig(
        workspace=str(tmp_path / "ws"),
        stages=["lowres"],
        manifests={"lowres": train},
        val_manifest=train,
        val_every=0,
        progress=False,
    )
    with pytest.raises(ValueError, match="val-every"):
        main(cfg)


# --- --val-fraction: a slice of the training manifests, held out by sample_id ----------------------


def two_class_manifest(folder) -> str:
    """32 generated images of two classes that only the caption tells apart: reddish squares
    captioned one way, bluish ones the other. A model that reads its caption can predict the
    colour from pure noise; one that does not can only predict the mean of the two."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for name, rgb, caption in (
        ("red", (220, 30, 30), "a bright red square"),
        ("blue", (30, 30, 220), "a deep blue circle"),
    ):
        for i in range(16):
            pixels = np.clip(np.array(rgb)[None, None] + rng.integers(-20, 20, (16, 16, 3)), 0, 255)
            path = folder / f"{name}{i}.png"
            Image.fromarray(pixels.astype(np.uint8)).save(path)
            rows.append(
                {"sample_id": f"{name}-{i:02d}", "uri": str(path), "caption": caption, "concept_ids": [i]}
            )
    return write_manifest(str(folder / "two-classes.parquet"), rows, size=(16, 16))


def test_a_held_out_slice_scores_deterministically_and_a_caption_trained_model_has_a_gap(tmp_path, encoder):
    manifest = two_class_manifest(tmp_path)
    cfg = TrainConfig(
        workspace=str(tmp_path / "ws"),
        stages=["lowres"],
        manifests={"lowres": manifest},
        preset="S3DiT-T/4",  # 16 px, patch 4: 16 tokens an image, ~0.1 s a step on one thread
        steps=50,  # the gap is ~0.17 at step 50 and grows to ~2 by step 150 (measured)
        batch_size=8,
        lr=2e-3,
        warmup=5,
        schedule="constant",
        feedback_every=1000,
        checkpoint_every=1000,
        progress=False,
        val_fraction=0.25,
        val_every=25,
        val_timesteps=3,
    )
    summary = main(cfg)
    first, last = summary["validation"][0], summary["validation"][-1]
    assert [row["step"] for row in summary["validation"]] == [0, 25, 50]
    assert first["val_gap"] == pytest.approx(0.0, abs=1e-3)  # the initial model ignores the caption
    assert last["val_gap"] > 0.05, last  # trained on matched captions: the true caption helps
    # the same held-out rows and terms again give exactly the same scores
    table = read_manifest(manifest)
    held = held_out_rows([table], 0.25)
    assert set(held["caption"].to_pylist()) == {"a bright red square", "a deep blue circle"}
    ema = load_for_sampling(os.path.join(cfg.run_dir, "checkpoints", "latest.pt"))["model"]
    scores = [
        validation_loss(ema, load_validation(held, encoder, PixelLatents(), 3, "held")) for _ in range(2)
    ]
    assert scores[0] == scores[1]
    assert scores[0]["val_loss"] == last["val_loss"] and scores[0]["val_gap"] == last["val_gap"]


def test_held_out_rows_are_never_trained_on(tmp_path, clipart_rows):
    table = read_manifest(write_manifest(str(tmp_path / "m.parquet"), clipart_rows))
    held = set(held_out_rows([table], 0.3)["sample_id"].to_pylist())
    trained = set(training_rows(table, 0.3)["sample_id"].to_pylist())
    assert held and trained and not held & trained
    assert held | trained == set(table["sample_id"].to_pylist())
    assert training_rows(table, None) is table and training_rows(table, 0.0) is table


def test_val_fraction_and_val_manifest_are_exclusive(tmp_path, clipart_rows):
    path = write_manifest(str(tmp_path / "m.parquet"), clipart_rows[:4])
    cfg = TrainConfig(
        workspace=str(tmp_path / "ws"),
        stages=["lowres"],
        manifests={"lowres": path},
        val_manifest=path,
        val_fraction=0.2,
    )
    with pytest.raises(ValueError, match="not both"):
        main(cfg)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        TrainConfig(workspace="ws", stages=["lowres"], manifests={}, val_fraction=1.0).check()


def test_validation_goes_to_tensorboard_too(tmp_path, clipart_rows):
    pytest.importorskip("tensorboard", reason="--log tensorboard needs the [train] extra's tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train = write_manifest(str(tmp_path / "lowres.parquet"), clipart_rows[:8])
    val = write_manifest(str(tmp_path / "val.parquet"), clipart_rows[48:52])
    cfg = TrainConfig(
        workspace=str(tmp_path / "ws"),
        stages=["lowres"],
        manifests={"lowres": train},
        preset="S3DiT-T/4",
        steps=2,
        batch_size=4,
        warmup=1,
        progress=False,
        log="tensorboard",
        val_manifest=val,
        val_every=1,
        val_timesteps=2,
    )
    summary = main(cfg)
    events = EventAccumulator(os.path.join(cfg.run_dir, "tensorboard")).Reload()
    gaps = events.Scalars("val/gap")
    assert [e.step for e in gaps] == [0, 1, 2]
    assert gaps[-1].value == pytest.approx(summary["validation"][-1]["val_gap"])
