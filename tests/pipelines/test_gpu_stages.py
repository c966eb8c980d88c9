"""The image stages and FAISS on CUDA give what the CPU gives (run on a GPU machine: ``-m gpu``).

Skipped, with the reason, where torch sees no CUDA device (or FAISS has no GPU build). The
device machine runs them through ``scripts/gpu_check.sh``.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.devices import cuda_device_count

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(cuda_device_count() == 0, reason="needs a CUDA device (torch sees none)"),
]


def openclipart_images(n: int) -> list:
    """The first ``n`` openclipart PNGs (sorted by path), as RGB PIL images."""
    import glob

    from PIL import Image

    paths = sorted(glob.glob("/usr/share/openclipart/png/**/*.png", recursive=True))[:n]
    if len(paths) < n:
        pytest.skip("openclipart-png is not installed here")
    images = []
    for path in paths:
        with Image.open(path) as im:
            images.append(im.convert("RGB"))
    return images


@pytest.mark.parametrize("arch", ["default", "ViT-B-32"])
def test_embeddings_on_cuda_match_the_cpu(arch, tmp_path):
    """bf16 autocast on the GPU vs float32 on the CPU: the same vectors to within rounding."""
    import open_clip
    import torch

    from engine.vectors.model_specs import load_embedder

    spec = arch
    if arch != "default":
        torch.manual_seed(0)
        path = tmp_path / f"{arch}.pt"
        torch.save(open_clip.create_model(arch, pretrained=None).state_dict(), path)
        spec = f"{arch}@{path}"
    images = openclipart_images(16)
    captions = ["a red apple on a table", "a cartoon cat", "a map of the world", "a blue car"]
    cpu, gpu = load_embedder(spec, "cpu"), load_embedder(spec, "cuda:0")
    for a, b in (
        (cpu.encode_images(images), gpu.encode_images(images)),
        (cpu.encode_texts(captions), gpu.encode_texts(captions)),
    ):
        assert a.dtype == b.dtype == np.float32
        assert np.allclose(np.linalg.norm(b, axis=1), 1, atol=1e-3)
        assert (a * b).sum(axis=1).min() > 0.99


def test_dedup_on_the_gpu_finds_the_cpus_communities(tmp_path):
    from engine.vectors.dedup import DedupConfig, dedup_workspace
    from engine.vectors.faiss_gpu import gpu_available
    from tests.curated import curate_small_workspace

    if not gpu_available():
        pytest.skip("needs faiss built with CUDA (the [gpu] extra's faiss-gpu-cu12)")
    ws = curate_small_workspace(str(tmp_path / "ws"), limit=80)
    cpu = ws.read_table("dedup").sort_by("sample_id")
    dedup_workspace(ws, DedupConfig(device="cuda:0"))
    gpu = ws.read_table("dedup").sort_by("sample_id")
    assert gpu["community_id"].to_pylist() == cpu["community_id"].to_pylist()
    assert gpu["nearest_id"].to_pylist() == cpu["nearest_id"].to_pylist()


def test_the_embed_stage_takes_a_share_of_the_gpu_on_ray(tmp_path):
    """A curate job with the embed stage on CUDA: actors ask Ray for 1/8 of a GPU each, and the
    vectors equal a CPU run's to within bf16 rounding."""
    from engine.profiling.source import load_source
    from engine.workspace import Workspace
    from pipelines.curate import run_curate
    from pipelines.stages import EmbedStage

    results = {}
    for device in ("cpu", "cuda"):
        ws = Workspace(str(tmp_path / device))
        stage = EmbedStage(device=device)
        assert stage.num_gpus == (0.125 if device == "cuda" else 0)
        run_curate(
            load_source("openclipart"),
            ws,
            limit=48,
            shard_size=16,
            progress=False,
            image_stages=[stage],
            tag=False,
        )
        table = ws.read_table("embeddings").sort_by("sample_id")
        results[device] = np.stack(table["image_vec"].to_numpy(zero_copy_only=False)).astype(np.float32)
    assert results["cpu"].shape == results["cuda"].shape
    assert (results["cpu"] * results["cuda"]).sum(axis=1).min() > 0.99
