"""--resolution: buckets scaled to a longer side, aspect kept, on the model's grid; the trainer
trains (and the sampler samples) at that size; the pre-flight report's tokens, timed estimate and
the flag that makes a slow CPU step fast; the warm-up leaves the run untouched."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest
import torch

from engine.s3dit.model import build_model
from engine.s3dit.resolution import (
    largest_bucket,
    scale_buckets,
    scale_size,
    smaller_resolutions,
    tokens_per_image,
)
from engine.s3dit.runtime import TorchThreads
from engine.s3dit.step_estimate import StepPlan, plan_step
from engine.s3dit.train import TrainConfig, main
from tests.engine.s3dit.manifests import write_manifest


def test_the_longer_side_becomes_the_resolution_on_the_grid():
    assert scale_size(256, 256, 64, 4) == (64, 64)
    assert scale_size(256, 384, 64, 4) == (44, 64)  # 42.7 rounded to the 4 px grid
    assert scale_size(384, 256, 64, 16) == (64, 48)  # 42.7 on a VAE-8 x patch-2 grid
    assert scale_size(32, 48, 16, 4) == (12, 16)
    assert scale_size(32, 1024, 64, 4) == (4, 64)  # never below one grid cell
    assert scale_size(64, 64, 256, 4) == (256, 256)  # scaling up works too
    with pytest.raises(ValueError, match="positive"):
        scale_size(64, 64, 0, 4)


def test_tokens_and_candidates():
    assert tokens_per_image(256, 256, 4) == 4096  # the demo's lowres bucket for S3DiT-T/4
    assert tokens_per_image(64, 64, 4) == 256
    assert tokens_per_image(1024, 1024, 2, 8) == 4096  # a VAE's factor 8, patch 2
    assert smaller_resolutions(256, 4) == [224, 192, 160, 128, 96, 64, 32]
    assert smaller_resolutions(32, 4) == []
    assert largest_bucket([(32, 48), (48, 48), (48, 32)]) == (48, 48)


def test_scale_buckets_rewrites_the_bucket_columns():
    table = pa.table(
        {"bucket_h": pa.array([256, 256], pa.int32()), "bucket_w": pa.array([256, 384], pa.int32())}
    )
    scaled = scale_buckets(table, 64, 4)
    assert scaled["bucket_h"].to_pylist() == [64, 44] and scaled["bucket_w"].to_pylist() == [64, 64]
    assert scaled.schema == table.schema
    assert scale_buckets(table, None, 4) is table


def test_the_trainer_trains_at_the_resolution(tmp_path, clipart_rows):
    path = write_manifest(str(tmp_path / "lowres.parquet"), clipart_rows[:8], size=(32, 48))
    plans = []
    cfg = TrainConfig(
        workspace=str(tmp_path / "ws"),
        stages=["lowres"],
        manifests={"lowres": path},
        preset="S3DiT-T/4",
        resolution=16,
        steps=2,
        batch_size=4,
        warmup=1,
        progress=False,
    )
    summary = main(cfg, on_plan=plans.append)
    assert len(plans) == 1 and isinstance(plans[0], StepPlan)
    plan = plans[0]
    assert plan.bucket == (12, 16) and plan.tokens == 3 * 4 and plan.batch_size == 4
    assert plan.seconds > 0 and plan.advice is None  # 12 tokens: far under the budget
    assert summary["plans"] == [{**plan.__dict__}]
    assert any("12 tokens per image" in line for line in plan.lines())
    ckpt = torch.load(os.path.join(cfg.run_dir, "checkpoints", "latest.pt"), weights_only=False)
    assert ckpt["image_size"] == [12, 16] and ckpt["cfg"]["resolution"] == 16


def test_a_slow_cpu_step_gets_the_flag_that_makes_it_fast():
    """With a budget below the measured step, the report names a smaller --resolution whose step,
    timed, is under it; the warm-up changes no weight, gradient or random state."""
    torch.manual_seed(0)
    model = build_model("S3DiT-T/4")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    plan = plan_step(model, "lowres", "S3DiT-T/4", (128, 128), 4, 12, 1)
    assert plan.tokens == 1024 and (plan.advice is None) == (plan.seconds <= plan.budget)
    slow = plan_step(model, "lowres", "S3DiT-T/4", (128, 128), 4, 12, 1, budget=plan.seconds / 4)
    assert slow.advice is not None and slow.advice.startswith("--resolution "), slow
    resolution = int(slow.advice.split()[1])
    assert resolution < 128 and slow.advice_tokens < slow.tokens
    if "--batch-size" not in slow.advice:  # the resolution alone was enough: it was timed under
        assert slow.advice_seconds <= plan.seconds / 4
    assert any(slow.advice in line for line in slow.lines())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


def test_with_several_threads_one_thread_is_timed_too():
    """On a CPU with several threads the report also times one thread and advises --threads 1
    exactly when it was clearly faster (which it is depends on what else runs on the cores)."""
    torch.manual_seed(0)
    model = build_model("S3DiT-T/4")
    with TorchThreads(2):
        plan = plan_step(model, "lowres", "S3DiT-T/4", (32, 32), 4, 12, 1)
    assert plan.threads == 2 and plan.one_thread_seconds is not None
    one_is_faster = plan.one_thread_seconds < 0.8 * plan.seconds
    assert (plan.advice or "").startswith("--threads 1") == one_is_faster, plan
    if plan.advice == "--threads 1":  # fast enough on one thread: the advice is the thread count alone
        assert plan.advice_seconds == plan.one_thread_seconds
        assert "one thread is faster than 2" in plan.lines()[-1]
