"""The trainer's CUDA path, on a CUDA device (``pytest -m gpu``; ``scripts/gpu_check.sh`` runs them
on a GPU machine), skipped elsewhere: a bf16 autocast step close to the float32 one and a short
trainer run on ``--device auto``, gradient checkpointing equal to the plain step, and exact resume.

Exact resume on CUDA needs deterministic kernels (attention's backward and cuBLAS reductions may
otherwise differ between two identical runs): the resume test turns on
``torch.use_deterministic_algorithms`` with cuBLAS's fixed workspace, as a user who needs
bit-identical resumes on a GPU would.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

from engine.s3dit.model import Condition, build_model
from engine.s3dit.train import TrainConfig, main
from tests.engine.s3dit.manifests import write_manifest

# cuBLAS reads this when it creates its handle: deterministic reductions need a fixed workspace.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)"
    ),
]


@pytest.fixture
def deterministic():
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


def config(tmp_path, manifests: dict[str, str], **overrides) -> TrainConfig:
    base = {
        "workspace": str(tmp_path / "ws"),
        "stages": list(manifests),
        "manifests": manifests,
        "preset": "S3DiT-T/2",
        "steps": 4,
        "batch_size": 8,
        "lr": 1e-3,
        "warmup": 1,
        "feedback_every": 100,
        "checkpoint_every": 100,
        "progress": False,
        "device": "auto",
    }
    return TrainConfig(**{**base, **overrides})


def perturbed_model(preset: str) -> torch.nn.Module:
    """A preset with its zero-initialised gates moved off zero, so every path carries gradient."""
    torch.manual_seed(0)
    model = build_model(preset).cuda()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def cuda_inputs(n: int = 4, size: int = 32, lens: tuple[int, ...] = (3, 8, 17, 40)):
    """Latents, timesteps and ragged captions (MiniLM's 384-d) on the GPU, from a fixed seed."""
    g = torch.Generator().manual_seed(0)
    cap = torch.randn(n, max(lens), 384, generator=g)
    for i, length in enumerate(lens):
        cap[i, length:] = 0
    x, t = torch.randn(n, 3, size, size, generator=g), torch.rand(n, generator=g)
    return x.cuda(), t.cuda(), Condition(cap.cuda(), torch.tensor(lens).cuda())


def test_a_bf16_autocast_step_is_close_to_float32_and_the_trainer_runs_on_cuda(tmp_path, clipart_rows):
    model = perturbed_model("S3DiT-T/2")
    x, t, cond = cuda_inputs()
    full = model(x, t, cond).float().square().mean()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        half = model(x, t, cond).float().square().mean()
    half.backward()
    assert math.isfinite(half.item()) and half.item() == pytest.approx(full.item(), rel=5e-2)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: weights stay float32

    path = write_manifest(str(tmp_path / "lowres.parquet"), clipart_rows[:16])
    cfg = config(tmp_path, {"lowres": path})
    summary = main(cfg)
    assert summary["plans"][0]["device"].startswith("cuda")  # --device auto picked the GPU
    assert all(math.isfinite(loss) for loss in summary["losses"]["lowres"])
    ckpt = torch.load(summary["checkpoint"], map_location="cpu", weights_only=False)
    assert all(v.dtype == torch.float32 for v in ckpt["model"].values() if v.is_floating_point())


@pytest.mark.parametrize("autocast", [False, True])
def test_gradient_checkpointing_equals_the_plain_step_on_cuda(autocast):
    model = perturbed_model("S3DiT-XS/2")
    x, t, cond = cuda_inputs()
    grads = []
    for checkpointing in (False, True):
        model.zero_grad(set_to_none=True)
        model.gradient_checkpointing = checkpointing
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            loss = model(x, t, cond).float().square().mean()
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    # the recomputed forward runs the same kernels on the same inputs; bf16 leaves room for
    # reduction order only
    tolerance = {"rtol": 2e-2, "atol": 1e-4} if autocast else {"rtol": 1e-4, "atol": 1e-6}
    for plain, checkpointed in zip(*grads, strict=True):
        torch.testing.assert_close(checkpointed, plain, **tolerance)


@pytest.mark.usefixtures("deterministic")
def test_resume_on_cuda_gives_identical_weights(tmp_path, clipart_rows):
    """2 stages x 3 steps in one go == stopped at step 4 (mid second stage) and run again, on the
    GPU with bf16 autocast and gradient checkpointing (the CUDA defaults)."""
    lowres = write_manifest(str(tmp_path / "lowres.parquet"), clipart_rows[:16])
    sft = write_manifest(str(tmp_path / "sft.parquet"), clipart_rows[16:32], stage="sft")
    manifests = {"lowres": lowres, "sft": sft}
    whole = config(tmp_path / "a", manifests, steps=3)
    main(whole)
    parted = config(tmp_path / "b", manifests, steps=3)
    assert main(parted, stop_at=4)["stopped"]
    assert main(parted)["step"] == 6
    a = torch.load(os.path.join(whole.run_dir, "checkpoints", "latest.pt"), weights_only=False)
    b = torch.load(os.path.join(parted.run_dir, "checkpoints", "latest.pt"), weights_only=False)
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), (key, name)
