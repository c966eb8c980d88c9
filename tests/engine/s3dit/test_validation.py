"""The held-out validation loss: fixed terms (same model, same score, whatever the row order), a
caption gap that is exactly 0 for a model that ignores text, unreadable rows left out and named,
and the trainer's val.csv written before the first step, every --val-every steps and at the end."""

from __future__ import annotations

import csv
import os

import pyarrow.parquet as pq
import pytest
import torch

from engine.curation.manifest import ManifestError
from engine.s3dit.conditioning import PixelLatents, TextEncoder
from engine.s3dit.model import build_model
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
