"""Bring your own model: any open_clip width through every step, and models side by side.

Real open_clip architectures with random weights, saved as local checkpoints (nothing is
downloaded; speed and plumbing do not depend on the weights): ViT-B-32 (512-d) and ViT-S-32
(384-d), next to the embedded default (256-d). The 512-d workspace goes through the user's path:
``zcurate curate --model ARCH@ckpt`` (Ray), index, dedup, tags, ``zcurate search``, a manifest and
``/v1/search`` over real HTTP. A second workspace holds two models and switches between them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from engine.embedding_models import active_model, list_models, model_key
from engine.vectors.index import read_meta
from engine.workspace import Workspace

ZCURATE = os.path.join(os.path.dirname(sys.executable), "zcurate")
LIMIT = 40  # openclipart pairs: two shards, a few near-duplicates among the variants
SHARD_SIZE = 20


def zcurate(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([ZCURATE, *args], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    """``ARCH@/path/ARCH.pt`` specs of open_clip models built with seeded random weights (float16 on
    disk: half the bytes; open_clip loads them into its float32 model)."""
    import open_clip
    import torch

    folder = tmp_path_factory.mktemp("checkpoints")
    specs = {}
    for arch in ("ViT-B-32", "ViT-S-32"):
        torch.manual_seed(0)
        model = open_clip.create_model(arch, pretrained=None)
        path = folder / f"{arch}.pt"
        torch.save({k: v.half() for k, v in model.state_dict().items()}, path)
        specs[arch] = f"{arch}@{path}"
    return specs


@pytest.fixture(scope="module")
def b32_workspace(checkpoints, tmp_path_factory) -> Workspace:
    """openclipart pairs curated with ViT-B-32 (512-d) as the only model, through the CLI and Ray."""
    root = str(tmp_path_factory.mktemp("b32") / "ws")
    zcurate(
        "curate", "openclipart", "--workspace", root, "--limit", str(LIMIT), "--shard-size", str(SHARD_SIZE),
        "--stages", "embed", "--model", checkpoints["ViT-B-32"], "--device", "cpu", "--num-cpus", "2",
    )  # fmt: skip
    return Workspace(root)


def test_a_512_d_model_goes_through_every_step(b32_workspace, checkpoints):
    ws = b32_workspace
    (model,) = list_models(ws)
    assert model.dim == 512 and model.key == active_model(ws).key
    assert model.spec == checkpoints["ViT-B-32"] and model.model_id.startswith("ViT-B-32@ViT-B-32.pt#")
    embeddings = ws.read_table("embeddings")
    assert embeddings.num_rows >= LIMIT - 2  # a couple of openclipart images may be rejected
    assert embeddings.schema.field("image_vec").type.list_size == 512
    assert set(embeddings["model_id"].to_pylist()) == {model.model_id}
    vectors = np.stack(embeddings["image_vec"].to_numpy(zero_copy_only=False)).astype(np.float32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-2)
    for modality in ("image", "text"):  # the index of this model, in its own folder
        meta = read_meta(ws, modality)
        assert meta["dim"] == 512 and meta["model_id"] == model.model_id
        assert meta["ntotal"] == embeddings.num_rows
        assert ws.exists(f"index/{model.key}", f"{modality}.faiss")
    dedup = ws.read_table("dedup")  # communities from the 512-d kNN graph
    assert dedup.num_rows == ws.read_table("signals").num_rows
    assert dedup["nearest_sim"].null_count == 0  # every sample found its nearest 512-d neighbour
    tags = ws.read_table("tags")
    assert tags.num_rows > 0
    # the catalog: clip_score in signals is this model's; the models view names it
    from engine.catalog import run_sql

    models = run_sql(ws, "SELECT key, dim, active FROM models").to_pylist()
    assert models == [{"key": model.key, "dim": 512, "active": True}]
    scores = run_sql(ws, "SELECT count(*) AS n FROM signals WHERE clip_score IS NOT NULL").to_pylist()
    assert scores[0]["n"] == embeddings.num_rows


def test_search_and_a_manifest_at_512_d(b32_workspace):
    ws = b32_workspace
    caption = ws.read_table("samples", ["caption"])["caption"][0].as_py()
    out = zcurate("search", "--workspace", ws.root, "--text", caption, "-k", "3", "--format", "json").stdout
    hits = json.loads(out)
    assert len(hits) == 3 and [h["rank"] for h in hits] == [1, 2, 3]
    from engine.curation.manifest import build_manifest
    from engine.curation.recipe import load_recipe

    result = build_manifest(ws, load_recipe("lowres"), seed=0)
    manifest = pq.read_table(result.path)
    assert manifest.num_rows > 0
    clip = manifest["clip_score"].to_pylist() if "clip_score" in manifest.column_names else [0.0]
    assert all(c is not None for c in clip)


def test_v1_search_uses_the_active_512_d_model_over_http(b32_workspace):
    from api.main import create_app
    from api.settings import Settings
    from tests.api.conftest import serve

    app = create_app(b32_workspace.root, Settings(api_keys="k-0123456789abcdef:read+write"))
    headers = {"Authorization": "Bearer k-0123456789abcdef"}
    with serve(app) as url, httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        found = client.get("/v1/search", params={"text": "a red apple", "k": 5})
        assert found.status_code == 200, found.text
        body = found.json()
        active = active_model(b32_workspace)
        assert body["model_id"] == active.model_id and len(body["hits"]) == 5
        models = client.get("/v1/models").json()
        assert models["active"] == active.key and models["models"][0]["dim"] == 512


@pytest.fixture(scope="module")
def two_model_workspace(checkpoints, tmp_path_factory) -> Workspace:
    """The embedded default (256-d, first, so active) and ViT-S-32 (384-d) in one workspace."""
    root = str(tmp_path_factory.mktemp("two") / "ws")
    zcurate(
        "curate", "openclipart", "--workspace", root, "--limit", str(LIMIT // 2), "--stages", "embed",
        "--device", "cpu", "--num-cpus", "2",
    )  # fmt: skip
    zcurate(
        "embed", "--workspace", root, "--model", checkpoints["ViT-S-32"], "--device", "cpu", "--num-cpus", "2"
    )
    return Workspace(root)


def clip_scores(ws: Workspace) -> dict[str, float]:
    from engine.catalog import run_sql

    rows = run_sql(ws, "SELECT sample_id, clip_score FROM signals WHERE clip_score IS NOT NULL").to_pylist()
    return {r["sample_id"]: r["clip_score"] for r in rows}


@pytest.mark.slow  # two curate/embed jobs and two switches (each re-tags): ~2 minutes
def test_two_models_live_side_by_side_and_switch(two_model_workspace, checkpoints):
    ws = two_model_workspace
    models = {m.dim: m for m in list_models(ws)}
    assert sorted(models) == [256, 384]
    default, s32 = models[256], models[384]
    assert active_model(ws).key == default.key  # the first model stays active; embed does not switch
    assert s32.key == model_key(s32.model_id) and s32.spec == checkpoints["ViT-S-32"]
    for m in (default, s32):  # each model has its own table and indexes
        table = ws.read_table(f"embeddings@{m.key}")
        assert table.schema.field("image_vec").type.list_size == m.dim
        assert read_meta(ws, "image", m.key)["dim"] == m.dim
    before = clip_scores(ws)
    default_files = {p: os.path.getmtime(p) for p in ws.shard_files(f"embeddings@{default.key}")}
    s32_scores = {r["sample_id"]: r["clip_score"] for r in ws.read_table(f"embeddings@{s32.key}").to_pylist()}

    zcurate("models", "use", s32.key, "--workspace", ws.root)
    assert active_model(ws).key == s32.key
    assert read_meta(ws, "image")["dim"] == 384
    after = clip_scores(ws)
    assert after == pytest.approx(s32_scores) and after != pytest.approx(before)
    assert ws.read_table("dedup").num_rows == len(before)  # recomputed with the 384-d kNN graph
    assert {p: os.path.getmtime(p) for p in ws.shard_files(f"embeddings@{default.key}")} == default_files
    listing = zcurate("models", "--workspace", ws.root).stdout
    assert f"* {s32.key}  384-d" in listing and f"  {default.key}  256-d" in listing

    zcurate("models", "use", default.key, "--workspace", ws.root)  # and back: the scores come back
    assert clip_scores(ws) == pytest.approx(before)


@pytest.mark.slow
def test_switching_errors_are_one_line(two_model_workspace):
    result = subprocess.run(
        [ZCURATE, "models", "use", "no-such-model", "--workspace", two_model_workspace.root],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "no model 'no-such-model'" in result.stderr
    assert "Traceback" not in result.stderr
