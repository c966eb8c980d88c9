"""zcurate train and zcurate sample, end to end on a real openclipart manifest: the pre-flight
report, --resolution on both, the validation line at the end, one-line errors for bad options."""

from __future__ import annotations

import os

import pytest
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from tests.engine.s3dit.manifests import write_manifest


@pytest.mark.usefixtures("one_torch_thread")
def test_train_then_sample_a_grid(tmp_path, clipart_rows):
    ws = tmp_path / "ws"
    folder = ws / "manifests" / "lowres"
    folder.mkdir(parents=True)
    write_manifest(str(folder / "m1.parquet"), clipart_rows[:16], size=(64, 96))
    runner = CliRunner()
    args = ["train", "--workspace", str(ws), "--preset", "S3DiT-T/4", "--steps", "3", "--batch-size", "4"]
    options = ["--warmup", "1", "--feedback-every", "3", "--resolution", "32", "--threads", "1"]
    result = runner.invoke(app, [*args, *options, "--val-fraction", "0.4", "--val-every", "3"])
    assert result.exit_code == 0, result.output
    assert "lowres: 32x20 images, 40 tokens per image (S3DiT-T/4), batch 4" in result.output
    assert "s per step on cpu with 1 torch thread (timed warm-up" in result.output
    assert "lowres: 3 steps" in result.output and "validation at step 3: loss " in result.output
    ckpt = ws / "train" / "s3dit" / "checkpoints" / "latest.pt"
    assert ckpt.is_file() and (ws / "feedback" / "lowres" / "000000003.parquet").is_file()
    out = tmp_path / "grid.png"
    args = [
        "sample",
        "--checkpoint",
        str(ckpt),
        "--prompt",
        "a red car",
        "--prompt",
        "a cat",
        "--threads",
        "1",
    ]
    result = runner.invoke(app, [*args, "--steps", "2", "--per-prompt", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (3 * 32, 2 * 20)  # the training size: 64x96 at --resolution 32
    result = runner.invoke(
        app, [*args, "--steps", "1", "--per-prompt", "1", "--out", str(out), "--resolution", "16"]
    )
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (16, 2 * 12)  # 20x32 scaled to a longer side of 16 on the 4 px grid


def test_bad_input_is_one_line(tmp_path, clipart_rows):
    runner = CliRunner()
    ws = str(tmp_path / "ws")
    result = runner.invoke(app, ["train", "--workspace", ws, "--stages", "lowres,sft"])
    assert result.exit_code == 2 and "no manifest for stage 'lowres'" in result.output
    result = runner.invoke(app, ["train", "--workspace", ws, "--manifest", "x.parquet", "--preset", "Huge/2"])
    assert result.exit_code == 2 and "unknown preset" in result.output
    result = runner.invoke(app, ["train", "--workspace", ws, "--manifest", str(tmp_path / "none.parquet")])
    assert result.exit_code == 2 and "cannot read manifest" in result.output
    result = runner.invoke(app, ["sample", "--checkpoint", os.path.join(ws, "no.pt"), "--prompt", "x"])
    assert result.exit_code == 2 and "does not exist" in result.output
    path = write_manifest(str(tmp_path / "m.parquet"), clipart_rows[:2])
    base = ["train", "--workspace", ws, "--manifest", path]
    bad = {
        ("--val-fraction", "1.5"): "--val-fraction must be in [0, 1)",
        ("--val-fraction", "0.1", "--val-manifest", path): "not both",
        ("--threads", "0"): "--threads must be at least 1",
        ("--resolution", "0"): "--resolution must be positive",
        ("--device", "cuda:99"): "is not available",
        ("--device", "tpu"): "unknown device",
    }
    for options, message in bad.items():
        result = runner.invoke(app, [*base, *options])
        assert result.exit_code == 2 and message in result.output, (options, result.output)
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_every_train_config_field_is_an_option(tmp_path, monkeypatch, clipart_rows):
    """zcurate train's options are TrainConfig's fields (name, default, help), without a second list."""
    import dataclasses

    import engine.s3dit.train
    from engine.s3dit.runtime import allowed_cpus
    from engine.s3dit.train_config import TrainConfig

    runner = CliRunner()
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "Example: zcurate train --workspace" in result.output
    for f in dataclasses.fields(TrainConfig):
        if f.name not in ("workspace", "stages", "manifests"):
            assert f"--{f.name.replace('_', '-')}" in result.output, f.name
            assert f.metadata["help"] in result.output, f.name
    seen = []

    def fake_main(cfg, on_plan=None):  # the trainer itself runs in test_train_then_sample_a_grid
        seen.append(cfg)
        return {"losses": {}, "skipped": [], "checkpoint": "x", "feedback": [], "refreshed": []}

    monkeypatch.setattr(engine.s3dit.train, "main", fake_main)
    path = write_manifest(str(tmp_path / "m.parquet"), clipart_rows[:2])
    args = ["train", "-w", str(tmp_path / "ws"), "--manifest", path, "--betas", "0.8", "0.99"]
    result = runner.invoke(app, [*args, "--cap-dropout", "0.2", "--no-progress", "--epoch-size", "5"])
    assert result.exit_code == 0, result.output
    expected = TrainConfig(
        workspace=str(tmp_path / "ws"),
        stages=["lowres"],
        manifests={"lowres": path},
        betas=(0.8, 0.99),
        cap_dropout=0.2,
        progress=False,
        epoch_size=5,
        threads=allowed_cpus(),  # zcurate train's default: the CPUs this process may use
    )
    assert seen == [expected]
